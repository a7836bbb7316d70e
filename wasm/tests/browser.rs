//! End-to-end tests in headless Chromium against a live `eddy serve` (started by `./dev test`,
//! whose URL is compiled in as `EDDY_TEST_URL`): two clients converge, a reopened database keeps
//! committed and pending writes, writes made while paused sync after `resume`, subscription
//! updates complete, a second tab is refused, and objects ingested offline survive a reopen and
//! reach the server (`./dev test` then checks the server holds exactly 10,000 of them).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::panic)]

use eddy_wasm::{App, Credentials, Eddy, Results, User};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// How long any awaited sync step may take before the test fails.
const STEP_TIMEOUT_MS: u32 = 15_000;

fn server_url() -> &'static str {
    match option_env!("EDDY_TEST_URL") {
        Some(url) => url,
        None => panic!(
            "EDDY_TEST_URL is not set: run these tests with ./dev test, which starts a server"
        ),
    }
}

fn obj(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &k.into()).unwrap()
}

/// Awaits `promise`, failing the test after [`STEP_TIMEOUT_MS`] with `what`.
async fn within(what: &str, promise: Promise) -> JsValue {
    let marker = JsValue::from_str("__timeout__");
    let timed = Promise::new(&mut |resolve, _| {
        let window = web_sys::window().unwrap();
        window
            .set_timeout_with_callback_and_timeout_and_arguments_1(
                &resolve,
                STEP_TIMEOUT_MS as i32,
                &marker,
            )
            .unwrap();
    });
    let winner = JsFuture::from(Promise::race(&Array::of2(&promise, &timed)))
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
    if winner == marker {
        panic!("timed out after {STEP_TIMEOUT_MS} ms waiting for {what}");
    }
    winner
}

/// A unique tag so tests sharing the server file see only their own objects.
fn tag(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn schema() -> JsValue {
    let task = obj(&[
        ("name", "Task".into()),
        ("primaryKey", "_id".into()),
        (
            "properties",
            obj(&[
                ("_id", "objectId".into()),
                ("title", "string".into()),
                (
                    "done",
                    obj(&[("type", "bool".into()), ("default", false.into())]),
                ),
                ("owner", "string?".into()),
                ("created", "int?".into()),
            ]),
        ),
    ]);
    let reading = obj(&[
        ("name", "Reading".into()),
        ("primaryKey", "_id".into()),
        ("asymmetric", true.into()),
        (
            "properties",
            obj(&[
                ("_id", "objectId".into()),
                ("sensor", "string".into()),
                ("celsius", "double".into()),
            ]),
        ),
    ]);
    Array::of2(&task, &reading).into()
}

async fn log_in() -> User {
    let app = App::new(obj(&[
        ("id", "tests".into()),
        ("baseUrl", server_url().into()),
    ]))
    .unwrap();
    app.log_in(&Credentials::anonymous()).await.unwrap()
}

async fn open(user: &User, path: &str) -> Eddy {
    let config = obj(&[
        ("schema", schema()),
        ("path", path.into()),
        (
            "sync",
            obj(&[
                ("user", JsValue::from(user.clone())),
                ("flexible", true.into()),
            ]),
        ),
    ]);
    Eddy::open(config).await.unwrap()
}

/// Runs `f` inside `db.write` and waits until it is durable.
async fn write(db: &Eddy, f: impl FnOnce(&Eddy) + 'static) {
    let handle = db.clone();
    let callback = Closure::once_into_js(move || f(&handle));
    let durable = db.write(callback.unchecked_ref::<Function>()).unwrap();
    within("a durable write", durable).await;
}

fn add_task(db: &Eddy, title: &str) -> JsValue {
    db.create("Task".into(), obj(&[("title", title.into())]), None)
        .unwrap()
}

fn titles(results: &Results) -> Vec<String> {
    results
        .to_json()
        .unwrap()
        .iter()
        .map(|t| get(&t, "title").as_string().unwrap())
        .collect()
}

fn tasks_tagged(db: &Eddy, tag: &str) -> Results {
    db.objects("Task".into())
        .unwrap()
        .filtered(
            "title BEGINSWITH $0".into(),
            tag.into(),
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
        )
        .unwrap()
        .sorted("title".into(), None)
        .unwrap()
}

async fn close(db: &Eddy) {
    let db = db.clone();
    let closing = wasm_bindgen_futures::future_to_promise(async move {
        db.close().await?;
        Ok(JsValue::UNDEFINED)
    });
    within("close", closing).await;
}

async fn settle(db: &Eddy) {
    within("upload", db.sync_session().upload_all_local_changes()).await;
    within("download", db.sync_session().download_all_server_changes()).await;
}

#[wasm_bindgen_test]
async fn two_clients_converge() {
    let t = tag("converge");
    let (ua, ub) = (log_in().await, log_in().await);
    let (a, b) = (open(&ua, "a").await, open(&ub, "b").await);
    let title = format!("{t} 1");
    write(&a, move |db| {
        add_task(db, &title);
    })
    .await;
    settle(&a).await;
    settle(&b).await;
    assert_eq!(titles(&tasks_tagged(&b, &t)), vec![format!("{t} 1")]);

    // B edits the task through its live object; A sees the edit.
    let task = tasks_tagged(&b, &t).at(0).unwrap();
    write(&b, move |_| {
        Reflect::set(&task, &"done".into(), &true.into()).unwrap();
    })
    .await;
    settle(&b).await;
    settle(&a).await;
    let seen = tasks_tagged(&a, &t).to_json().unwrap().get(0);
    assert_eq!(get(&seen, "done"), JsValue::TRUE);
    close(&a).await;
    close(&b).await;
}

#[wasm_bindgen_test]
async fn reopened_database_keeps_committed_and_pending_writes() {
    let t = tag("reopen");
    let user = log_in().await;
    let db = open(&user, "reopen").await;
    let first = format!("{t} synced");
    write(&db, move |db| {
        add_task(db, &first);
    })
    .await;
    settle(&db).await;
    db.sync_session().pause();
    let second = format!("{t} pending");
    write(&db, move |db| {
        add_task(db, &second);
    })
    .await;
    close(&db).await;

    let db = open(&user, "reopen").await;
    db.sync_session().pause();
    assert_eq!(
        titles(&tasks_tagged(&db, &t)),
        vec![format!("{t} pending"), format!("{t} synced")]
    );
    db.sync_session().resume();
    settle(&db).await;

    let other = open(&log_in().await, "reopen-check").await;
    settle(&other).await;
    assert_eq!(titles(&tasks_tagged(&other, &t)).len(), 2);
    close(&db).await;
    close(&other).await;
}

#[wasm_bindgen_test]
async fn writes_made_while_paused_sync_after_resume() {
    let t = tag("offline");
    let (a, b) = (
        open(&log_in().await, "a").await,
        open(&log_in().await, "b").await,
    );
    settle(&a).await;
    a.sync_session().pause();
    assert_eq!(a.sync_session().connection_state(), "disconnected");
    let title = format!("{t} offline");
    write(&a, move |db| {
        add_task(db, &title);
    })
    .await;
    settle(&b).await;
    assert!(
        titles(&tasks_tagged(&b, &t)).is_empty(),
        "the paused client must not have uploaded"
    );

    // A listener on B sees the insertion once A resumes.
    let inserted = Promise::new(&mut |resolve, _| {
        let listener =
            Closure::<dyn FnMut(JsValue, JsValue)>::new(move |_: JsValue, changes: JsValue| {
                if Array::from(&get(&changes, "insertions")).length() > 0 {
                    resolve.call0(&JsValue::UNDEFINED).unwrap();
                }
            });
        tasks_tagged(&b, &t)
            .add_listener(listener.into_js_value().unchecked_into())
            .unwrap();
    });
    a.sync_session().resume();
    settle(&a).await;
    within("B's listener to see the insertion", inserted).await;
    assert_eq!(titles(&tasks_tagged(&b, &t)), vec![format!("{t} offline")]);
    close(&a).await;
    close(&b).await;
}

#[wasm_bindgen_test]
async fn subscription_updates_complete() {
    let db = open(&log_in().await, "subs").await;
    let query = tasks_tagged(&db, "nothing-");
    let add = Closure::once_into_js(move |subs: JsValue| {
        let add: Function = get(&subs, "add").unchecked_into();
        add.call2(
            &subs,
            &JsValue::from(query),
            &obj(&[("name", "mine".into())]),
        )
        .unwrap();
    });
    within(
        "subscriptions",
        db.subscriptions().update(add.unchecked_ref()).unwrap(),
    )
    .await;
    assert_eq!(db.subscriptions().state(), "complete");
    assert_eq!(db.subscriptions().length(), 1);
    assert!(!db.subscriptions().find_by_name("mine").is_null());
    close(&db).await;
}

#[wasm_bindgen_test]
async fn a_second_open_of_the_same_database_is_refused() {
    let user = log_in().await;
    let db = open(&user, "locked").await;
    let config = obj(&[
        ("schema", schema()),
        ("path", "locked".into()),
        (
            "sync",
            obj(&[
                ("user", JsValue::from(user.clone())),
                ("flexible", true.into()),
            ]),
        ),
    ]);
    let err = Eddy::open(config)
        .await
        .expect_err("the second open must fail");
    assert_eq!(get(&err, "code"), JsValue::from_str("database-in-use"));
    assert!(err.is_instance_of::<js_sys::Error>());
    close(&db).await;
}

#[wasm_bindgen_test]
async fn writes_outside_write_and_bad_values_are_errors() {
    let db = open(&log_in().await, "errors").await;
    let outside = db
        .create("Task".into(), obj(&[("title", "x".into())]), None)
        .err()
        .unwrap();
    assert!(get(&outside, "message")
        .as_string()
        .unwrap()
        .contains("db.write"));
    let handle = db.clone();
    let bad = Closure::once_into_js(move || {
        handle.create("Task".into(), obj(&[("title", 5.into())]), None)
    });
    let err = db.write(bad.unchecked_ref()).err().unwrap();
    assert!(
        get(&err, "message")
            .as_string()
            .unwrap()
            .contains("Task.title"),
        "{err:?}"
    );
    close(&db).await;
}

#[wasm_bindgen_test]
async fn a_remote_delete_reaches_an_object_listener() {
    let t = tag("delete");
    let (a, b) = (
        open(&log_in().await, "a").await,
        open(&log_in().await, "b").await,
    );
    let title = format!("{t} doomed");
    write(&a, move |db| {
        add_task(db, &title);
    })
    .await;
    settle(&a).await;
    settle(&b).await;
    let on_b = tasks_tagged(&b, &t).at(0).unwrap();
    assert!(
        !on_b.is_undefined(),
        "B must have the task before it is deleted"
    );
    let deleted = Promise::new(&mut |resolve, _| {
        let listener =
            Closure::<dyn FnMut(JsValue, JsValue)>::new(move |_: JsValue, change: JsValue| {
                if get(&change, "deleted") == JsValue::TRUE {
                    resolve.call0(&JsValue::UNDEFINED).unwrap();
                }
            });
        let add: Function = get(&on_b, "addListener").unchecked_into();
        add.call1(&on_b, &listener.into_js_value()).unwrap();
    });
    let on_a = tasks_tagged(&a, &t).at(0).unwrap();
    write(&a, move |db| db.delete(on_a).unwrap()).await;
    settle(&a).await;
    within("B's object listener to see the deletion", deleted).await;
    assert_eq!(tasks_tagged(&b, &t).length().unwrap(), 0);
    close(&a).await;
    close(&b).await;
}

/// Dispatches a window event such as `online` or `offline`.
fn network_event(name: &str) {
    let event = web_sys::Event::new(name).unwrap();
    web_sys::window().unwrap().dispatch_event(&event).unwrap();
}

#[wasm_bindgen_test]
async fn offline_and_online_events_drop_and_restore_the_connection() {
    let t = tag("network");
    let (a, b) = (
        open(&log_in().await, "a").await,
        open(&log_in().await, "b").await,
    );
    settle(&a).await;
    settle(&b).await;
    let reconnected = Promise::new(&mut |resolve, _| {
        let listener =
            Closure::<dyn FnMut(JsValue, JsValue)>::new(move |state: JsValue, _: JsValue| {
                if state == "connected" {
                    resolve.call0(&JsValue::UNDEFINED).unwrap();
                }
            });
        a.sync_session()
            .add_connection_notification(listener.into_js_value().unchecked_into());
    });
    network_event("offline");
    assert_ne!(a.sync_session().connection_state(), "connected");
    let title = format!("{t} while offline");
    write(&a, move |db| {
        add_task(db, &title);
    })
    .await;
    // Both databases live in this window, so both went offline; offline means no retries, so
    // only the online event can bring A back.
    assert_eq!(a.sync_session().connection_state(), "disconnected");
    network_event("online");
    within("reconnecting after the online event", reconnected).await;
    settle(&a).await;
    settle(&b).await;
    assert_eq!(
        titles(&tasks_tagged(&b, &t)),
        vec![format!("{t} while offline")]
    );
    close(&a).await;
    close(&b).await;
}

fn queued(db: &Eddy) -> f64 {
    get(&db.sync_session().ingest_queue().into(), "objects")
        .as_f64()
        .unwrap()
}

#[wasm_bindgen_test]
async fn objects_ingested_offline_survive_a_reopen_and_reach_the_server() {
    const READINGS: u32 = 10_000;
    let user = log_in().await;
    let db = open(&user, "ingest").await;
    db.sync_session().pause();
    write(&db, |db| {
        for i in 0..READINGS {
            let reading = obj(&[
                ("sensor", format!("greenhouse-{}", i % 7).into()),
                ("celsius", (18.0 + f64::from(i % 100) / 10.0).into()),
            ]);
            assert!(db.ingest("Reading".into(), reading).unwrap().is_undefined());
        }
    })
    .await;
    // Outside a write, ingest resolves once the object is durable in the queue.
    let single = db
        .ingest(
            "Reading".into(),
            obj(&[("sensor", "door".into()), ("celsius", 4.5.into())]),
        )
        .unwrap();
    within("a durable ingest", single.unchecked_into()).await;
    assert_eq!(queued(&db), f64::from(READINGS + 1));
    close(&db).await;

    let db = open(&user, "ingest").await;
    db.sync_session().pause();
    assert_eq!(
        queued(&db),
        f64::from(READINGS + 1),
        "the queue survives a reopen"
    );
    let refused = db.objects("Reading".into()).unwrap_err();
    assert!(
        get(&refused, "message")
            .as_string()
            .unwrap()
            .contains("asymmetric"),
        "{refused:?}"
    );
    db.sync_session().resume();
    within(
        "the ingest upload",
        db.sync_session().upload_all_local_changes(),
    )
    .await;
    assert_eq!(queued(&db), 0.0, "acknowledged objects leave the queue");
    close(&db).await;
}
