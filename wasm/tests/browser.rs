//! End-to-end tests in headless Chromium against three live `eddy serve`s started by `./dev test`
//! with `wasm/tests/app.toml` (whose roles let only a note's owner write it): the main one at
//! `EDDY_TEST_URL`, one whose access tokens expire after 2 to 3 seconds at
//! `EDDY_TEST_SHORT_TOKEN_URL`, and one restored from a backup of the main one's data at
//! `EDDY_TEST_RESTORED_URL` (all compiled in). Two clients converge, a reopened database keeps
//! committed and pending writes, writes made while paused sync after `resume`, subscription
//! changes bring objects in and remove others, a refused write is undone and reported as a
//! compensating write, tokens are renewed before they expire without the session ending, a revoked
//! one is reported, a failed IndexedDB transaction and a quota error reject the write and are
//! reported (both provoked through a patched `IDBObjectStore.put`), a write survives a reload
//! between its commit and the checkpoint of its object records (the checkpoint aborted the same
//! way), a second tab is refused, objects ingested offline survive a reopen and reach the
//! server (`./dev test` then checks the server holds exactly 10,001 of them), objects are live
//! (a write reads its own changes, later local and downloaded changes show in objects read
//! before, a deleted object is invalid and throws), a failed write inside `write()` undoes the
//! whole transaction, and a database reopened against the restored server, which never saw its
//! client file, is reset in each `sync.clientReset` mode (`onBefore` sees the local data
//! read-only, `onAfter` gets what was recovered and discarded; `"manual"` stops sync until the
//! app deletes the database with `Eddy.deleteDatabase`).

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::panic)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use eddy_wasm::{App, Credentials, Eddy, Results, User};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// How long any awaited sync step may take before the test fails.
const STEP_TIMEOUT_MS: u32 = 15_000;

/// The second server, whose access tokens expire after 2 to 3 seconds.
fn short_token_server_url() -> &'static str {
    match option_env!("EDDY_TEST_SHORT_TOKEN_URL") {
        Some(url) => url,
        None => panic!(
            "EDDY_TEST_SHORT_TOKEN_URL is not set: run these tests with ./dev test, which starts a server with short-lived tokens"
        ),
    }
}

/// A third server, started from a copy of the main one's data taken after [`RESET_EMAIL`] had
/// registered and before any database synced: it knows that user but none of the client files
/// the main server allocates, as a server restored from an old backup would.
fn restored_server_url() -> &'static str {
    match option_env!("EDDY_TEST_RESTORED_URL") {
        Some(url) => url,
        None => panic!(
            "EDDY_TEST_RESTORED_URL is not set: run these tests with ./dev test, which starts a server restored from a backup"
        ),
    }
}

/// The user `./dev test` registers on the main server before copying its data for the restored
/// one.
const RESET_EMAIL: &str = "reset@example.com";
const RESET_PASSWORD: &str = "reset-password";

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

/// Awaits `promise` for at most [`STEP_TIMEOUT_MS`]: `Ok(None)` when the time ran out first.
async fn race_step_timeout(promise: Promise) -> Result<Option<JsValue>, JsValue> {
    let marker = JsValue::from_str("__timeout__");
    let timed = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_1(
                &resolve,
                STEP_TIMEOUT_MS as i32,
                &marker,
            )
            .unwrap();
    });
    let winner = JsFuture::from(Promise::race(&Array::of2(&promise, &timed))).await?;
    Ok((winner != marker).then_some(winner))
}

/// Awaits `promise`, failing the test after [`STEP_TIMEOUT_MS`] with `what`.
async fn within(what: &str, promise: Promise) -> JsValue {
    race_step_timeout(promise)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
        .unwrap_or_else(|| panic!("timed out after {STEP_TIMEOUT_MS} ms waiting for {what}"))
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
    // Only its owner may write a note (wasm/tests/app.toml).
    let note = obj(&[
        ("name", "Note".into()),
        ("primaryKey", "_id".into()),
        (
            "properties",
            obj(&[
                ("_id", "objectId".into()),
                ("owner", "string".into()),
                ("text", "string".into()),
            ]),
        ),
    ]);
    Array::of3(&task, &note, &reading).into()
}

async fn log_in_at(url: &str) -> User {
    let app = App::new(obj(&[("id", "tests".into()), ("baseUrl", url.into())])).unwrap();
    app.log_in(&Credentials::anonymous()).await.unwrap()
}

async fn log_in_as_reset_user(url: &str) -> User {
    let app = App::new(obj(&[("id", "tests".into()), ("baseUrl", url.into())])).unwrap();
    let credentials = Credentials::email_password(RESET_EMAIL.into(), RESET_PASSWORD.into());
    app.log_in(&credentials).await.unwrap()
}

async fn log_in() -> User {
    log_in_at(server_url()).await
}

/// Opens `path` for `user`, handing sync and storage errors to `on_error` when given.
async fn open_with(user: &User, path: &str, on_error: Option<&Function>) -> Eddy {
    let sync = obj(&[
        ("user", JsValue::from(user.clone())),
        ("flexible", true.into()),
    ]);
    if let Some(on_error) = on_error {
        Reflect::set(&sync, &"onError".into(), on_error).unwrap();
    }
    let config = obj(&[("schema", schema()), ("path", path.into()), ("sync", sync)]);
    Eddy::open(config).await.unwrap()
}

async fn open(user: &User, path: &str) -> Eddy {
    open_with(user, path, None).await
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

/// Makes the first transaction that puts an object record abort (the checkpoint that follows a
/// local write: its commit puts none), as if the page were reloaded before it committed. Returns
/// a function telling whether it fired.
fn abort_next_checkpoint() -> Function {
    Function::new_no_args(
        r#"
        const proto = IDBObjectStore.prototype;
        const put = proto.put;
        let fired = false;
        proto.put = function (...args) {
          if (this.name !== "objects") return put.apply(this, args);
          proto.put = put;
          fired = true;
          const request = put.apply(this, args);
          this.transaction.abort();
          return request;
        };
        return () => fired;
        "#,
    )
    .call0(&JsValue::UNDEFINED)
    .unwrap()
    .unchecked_into()
}

#[wasm_bindgen_test]
async fn a_write_survives_a_reload_between_its_commit_and_its_checkpoint() {
    let t = tag("ahead");
    let user = log_in().await;
    let errors = ErrorLog::default();
    let db = open_with(&user, "write-ahead", Some(&errors.callback())).await;
    let objects = Rc::new(RefCell::new(Vec::new()));
    let (kept, dropped) = (format!("{t} kept"), format!("{t} dropped"));
    let created = Rc::clone(&objects);
    write(&db, move |db| {
        created.borrow_mut().push(add_task(db, &kept));
        created.borrow_mut().push(add_task(db, &dropped));
    })
    .await;
    settle(&db).await;
    db.sync_session().pause();

    let fired = abort_next_checkpoint();
    let (added, renamed) = (format!("{t} added"), format!("{t} renamed"));
    let edited = Rc::clone(&objects);
    write(&db, move |db| {
        add_task(db, &added);
        let objects = edited.borrow();
        Reflect::set(&objects[0], &"title".into(), &renamed.into()).unwrap();
        db.delete(objects[1].clone()).unwrap();
    })
    .await;
    within(
        "the checkpoint to fail",
        errors.with("name", "StorageError".into()),
    )
    .await;
    assert_eq!(
        fired.call0(&JsValue::UNDEFINED).unwrap(),
        JsValue::TRUE,
        "the write resolved before any object record was written"
    );
    close(&db).await;

    let expected = vec![format!("{t} added"), format!("{t} renamed")];
    let db = open(&user, "write-ahead").await;
    db.sync_session().pause();
    assert_eq!(titles(&tasks_tagged(&db, &t)), expected);
    db.sync_session().resume();
    settle(&db).await;
    close(&db).await;
    // Syncing wrote the replayed objects' records; reopening reads them, replaying nothing twice.
    let db = open(&user, "write-ahead").await;
    assert_eq!(titles(&tasks_tagged(&db, &t)), expected);
    let other = open(&log_in().await, "write-ahead-check").await;
    settle(&other).await;
    assert_eq!(titles(&tasks_tagged(&other, &t)), expected);
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
    subscribe_only(&db, tasks_tagged(&db, "nothing-"), "mine").await;
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

/// Calls `object.name()`.
fn call(object: &JsValue, name: &str) -> JsValue {
    let method: Function = get(object, name).unchecked_into();
    method.call0(object).unwrap()
}

#[wasm_bindgen_test]
async fn objects_are_live_and_a_write_reads_its_own_changes() {
    let t = tag("live");
    let (a, b) = (
        open(&log_in().await, "live-a").await,
        open(&log_in().await, "live-b").await,
    );
    let title = format!("{t} task");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let slot = Rc::new(RefCell::new(JsValue::UNDEFINED));
    let (seen_in_write, slot_in_write, tag_in_write) = (seen.clone(), slot.clone(), t.clone());
    write(&a, move |db| {
        let task = add_task(db, &title);
        let mut seen = seen_in_write.borrow_mut();
        // Create, then read; assign, then read; a query sees the transaction's create.
        seen.push(get(&task, "title"));
        Reflect::set(&task, &"done".into(), &true.into()).unwrap();
        seen.push(get(&task, "done"));
        seen.push(tasks_tagged(db, &tag_in_write).length().unwrap().into());
        *slot_in_write.borrow_mut() = task;
    })
    .await;
    let title = format!("{t} task");
    assert_eq!(
        *seen.borrow(),
        vec![
            JsValue::from(title.as_str()),
            JsValue::TRUE,
            JsValue::from(1)
        ]
    );
    let task = slot.borrow().clone();

    // The object read before a later write shows it, in reads and in toJSON.
    let renamed = format!("{t} renamed");
    let (target, value) = (task.clone(), renamed.clone());
    write(&a, move |_| {
        Reflect::set(&target, &"title".into(), &value.as_str().into()).unwrap();
    })
    .await;
    assert_eq!(get(&task, "title"), JsValue::from(renamed.as_str()));
    assert!(json_text(&task).contains(&renamed), "{}", json_text(&task));
    let keys: Vec<String> = Object::keys(task.unchecked_ref::<Object>())
        .iter()
        .map(|k| k.as_string().unwrap())
        .collect();
    assert!(
        keys.contains(&"_id".into()) && keys.contains(&"title".into()),
        "{keys:?}"
    );
    // for...in lists the same fields, not the methods.
    let for_in = Function::new_with_args(
        "o",
        "const k = []; for (const p in o) k.push(p); return k.join();",
    );
    assert_eq!(
        for_in.call1(&JsValue::UNDEFINED, &task).unwrap(),
        JsValue::from(keys.join(","))
    );

    // An object read on B before A's next change shows the change once it is downloaded.
    settle(&a).await;
    settle(&b).await;
    let on_b = tasks_tagged(&b, &t).at(0).unwrap();
    assert_eq!(get(&on_b, "title"), JsValue::from(renamed.as_str()));
    let again = format!("{t} again");
    let (target, value) = (task.clone(), again.clone());
    write(&a, move |_| {
        Reflect::set(&target, &"title".into(), &value.as_str().into()).unwrap();
    })
    .await;
    settle(&a).await;
    settle(&b).await;
    assert_eq!(get(&on_b, "title"), JsValue::from(again.as_str()));

    // Deleted on A: invalid on both sides, and reading a field throws.
    let target = task.clone();
    write(&a, move |db| db.delete(target).unwrap()).await;
    settle(&a).await;
    settle(&b).await;
    for object in [&task, &on_b] {
        assert_eq!(call(object, "isValid"), JsValue::FALSE);
        let error = Reflect::get(object, &"title".into()).err().unwrap();
        assert_eq!(get(&error, "code"), JsValue::from("invalidated"));
        let message = get(&error, "message").as_string().unwrap();
        assert!(message.contains("invalidated or deleted"), "{message}");
    }
    close(&a).await;
    close(&b).await;
}

/// A fresh object id as text.
fn object_id_text() -> String {
    let high = (js_sys::Math::random() * 4_294_967_295.0) as u32;
    let low = (js_sys::Math::random() * 9.0e15) as u64;
    format!("{high:08x}{low:016x}")
}

#[wasm_bindgen_test]
async fn a_failed_write_inside_a_transaction_undoes_all_of_it() {
    let t = tag("undo");
    let db = open(&log_in().await, "undo").await;
    let id = object_id_text();
    let handle = db.clone();
    let (tag_in_write, outcome) = (t.clone(), Rc::new(RefCell::new(Vec::new())));
    let seen = outcome.clone();
    let callback = Closure::once_into_js(move || {
        let first = obj(&[
            ("_id", id.as_str().into()),
            ("title", format!("{tag_in_write} first").into()),
        ]);
        handle.create("Task".into(), first.clone(), None).unwrap();
        add_task(&handle, &format!("{tag_in_write} second"));
        // The same _id again fails: the call throws and the transaction is undone at once.
        let error = handle.create("Task".into(), first, None).err().unwrap();
        let mut seen = seen.borrow_mut();
        seen.push(get(&error, "message"));
        seen.push(
            tasks_tagged(&handle, &tag_in_write)
                .length()
                .unwrap()
                .into(),
        );
        seen.push(
            handle
                .create("Task".into(), obj(&[("title", "later".into())]), None)
                .is_err()
                .into(),
        );
    });
    let error = db.write(callback.unchecked_ref()).err().unwrap();
    let message = get(&error, "message").as_string().unwrap();
    assert!(
        message.starts_with("the write failed and changed nothing")
            && message.contains("already has an object with primary key"),
        "{message}"
    );
    let seen = outcome.borrow().clone();
    assert!(
        seen[0]
            .as_string()
            .unwrap()
            .contains("already has an object"),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[1], JsValue::from(0));
    assert_eq!(seen[2], JsValue::TRUE);
    assert_eq!(tasks_tagged(&db, &t).length().unwrap(), 0);
    close(&db).await;
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

/// The titles a [`Watch`] waits for, and the promise's `resolve`.
type TitlesWaiter = (Vec<String>, Function);

/// The field and value an [`ErrorLog`] waits for, and the promise's `resolve`.
type ErrorWaiter = (&'static str, JsValue, Function);

/// What a results listener has reported: the titles it saw last and how many insertions and
/// deletions it was told about.
#[derive(Clone, Default)]
struct Watch {
    titles: Rc<RefCell<Vec<String>>>,
    insertions: Rc<Cell<u32>>,
    deletions: Rc<Cell<u32>>,
    waiting: Rc<RefCell<Option<TitlesWaiter>>>,
}

impl Watch {
    /// Adds a listener to `results` that keeps this watch up to date.
    fn new(results: &Results) -> Watch {
        let watch = Watch::default();
        let w = watch.clone();
        let listener = Closure::<dyn FnMut(JsValue, JsValue)>::new(
            move |results: JsValue, changes: JsValue| {
                let count = |name: &str| Array::from(&get(&changes, name)).length();
                w.insertions.set(w.insertions.get() + count("insertions"));
                w.deletions.set(w.deletions.get() + count("deletions"));
                // The listener gets the JavaScript `Results`; read it through `toJSON` as an app
                // would (taking a Rust `Results` by value would take it away from JavaScript).
                let to_json: Function = get(&results, "toJSON").unchecked_into();
                *w.titles.borrow_mut() = Array::from(&to_json.call0(&results).unwrap())
                    .iter()
                    .map(|t| get(&t, "title").as_string().unwrap())
                    .collect();
                w.check();
            },
        );
        results
            .add_listener(listener.into_js_value().unchecked_into())
            .unwrap();
        watch
    }

    fn check(&self) {
        let done = matches!(&*self.waiting.borrow(), Some((expected, _)) if *expected == *self.titles.borrow());
        if done {
            if let Some((_, resolve)) = self.waiting.borrow_mut().take() {
                resolve.call0(&JsValue::UNDEFINED).unwrap();
            }
        }
    }

    /// Waits until the listener has seen exactly `expected` (sorted titles); on a timeout,
    /// fails with what it saw instead.
    async fn until(&self, what: &str, expected: Vec<String>) {
        let promise = Promise::new(&mut |resolve, _| {
            *self.waiting.borrow_mut() = Some((expected.clone(), resolve));
        });
        self.check();
        let seen = race_step_timeout(promise).await.unwrap();
        assert!(
            seen.is_some(),
            "timed out after {STEP_TIMEOUT_MS} ms waiting for {what}: the listener last saw {:?} \
             ({} insertions, {} deletions so far), not {expected:?}",
            self.titles.borrow(),
            self.insertions.get(),
            self.deletions.get(),
        );
    }
}

/// Subscribes `db` to exactly the tasks whose titles begin with `prefix`.
async fn subscribe_to_prefix(db: &Eddy, prefix: &str) {
    subscribe_only(db, tasks_tagged(db, prefix), "prefix").await;
}

/// Replaces `db`'s subscriptions with `query` under `name` and waits until the set is complete.
async fn subscribe_only(db: &Eddy, query: Results, name: &str) {
    let name = name.to_owned();
    let update = Closure::once_into_js(move |subs: JsValue| {
        let remove_all: Function = get(&subs, "removeAll").unchecked_into();
        remove_all.call0(&subs).unwrap();
        let add: Function = get(&subs, "add").unchecked_into();
        add.call2(
            &subs,
            &JsValue::from(query),
            &obj(&[("name", name.as_str().into())]),
        )
        .unwrap();
    });
    within(
        "the subscription update",
        db.subscriptions().update(update.unchecked_ref()).unwrap(),
    )
    .await;
    assert_eq!(db.subscriptions().state(), "complete");
}

#[wasm_bindgen_test]
async fn a_subscription_change_brings_objects_in_and_removes_others() {
    let t = tag("narrow");
    let (a, b) = (
        open(&log_in().await, "narrow-a").await,
        open(&log_in().await, "narrow-b").await,
    );
    subscribe_to_prefix(&b, &format!("{t} a")).await;
    let on_b = Watch::new(&tasks_tagged(&b, &t));
    let tt = t.clone();
    write(&a, move |db| {
        for title in ["a1", "a2", "b1"] {
            add_task(db, &format!("{tt} {title}"));
        }
    })
    .await;
    settle(&a).await;
    let only_a = vec![format!("{t} a1"), format!("{t} a2")];
    on_b.until("B to receive the tasks it subscribed to", only_a.clone())
        .await;
    settle(&b).await;
    assert_eq!(
        titles(&tasks_tagged(&b, &t)),
        only_a,
        "B holds only what it subscribed to"
    );
    assert_eq!(on_b.insertions.get(), 2);

    // Without reconnecting, B switches to the other prefix: b1 comes in, a1 and a2 leave.
    let connects = Rc::new(Cell::new(0));
    let counter = Rc::clone(&connects);
    let listener =
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |state: JsValue, _: JsValue| {
            if state == "connected" {
                counter.set(counter.get() + 1);
            }
        });
    b.sync_session()
        .add_connection_notification(listener.into_js_value().unchecked_into());
    subscribe_to_prefix(&b, &format!("{t} b")).await;
    on_b.until(
        "B's listener to see the new subscription's objects only",
        vec![format!("{t} b1")],
    )
    .await;
    assert_eq!(on_b.insertions.get(), 3, "b1 was reported as an insertion");
    assert_eq!(
        on_b.deletions.get(),
        2,
        "a1 and a2 were reported as deletions"
    );
    assert_eq!(connects.get(), 0, "the change needed no reconnect");
    assert_eq!(
        titles(&tasks_tagged(&a, &t)).len(),
        3,
        "leaving B's view deleted nothing on the server"
    );
    close(&a).await;
    close(&b).await;
}

/// Collects what a database hands to `sync.onError`, and waits for errors by a field's value.
#[derive(Clone, Default)]
struct ErrorLog {
    seen: Rc<RefCell<Vec<JsValue>>>,
    waiting: Rc<RefCell<Vec<ErrorWaiter>>>,
}

impl ErrorLog {
    /// The `onError` callback to open a database with.
    fn callback(&self) -> Function {
        let log = self.clone();
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |_: JsValue, error: JsValue| {
            log.seen.borrow_mut().push(error.clone());
            let mut ready = Vec::new();
            log.waiting.borrow_mut().retain(|(field, wanted, resolve)| {
                if get(&error, field) == *wanted {
                    ready.push(resolve.clone());
                    false
                } else {
                    true
                }
            });
            for resolve in ready {
                resolve.call1(&JsValue::UNDEFINED, &error).unwrap();
            }
        })
        .into_js_value()
        .unchecked_into()
    }

    /// Resolves with the first error whose `field` is `value`, reported already or later.
    fn with(&self, field: &'static str, value: JsValue) -> Promise {
        let seen = self
            .seen
            .borrow()
            .iter()
            .find(|e| get(e, field) == value)
            .cloned();
        Promise::new(&mut |resolve, _| match &seen {
            Some(error) => {
                resolve.call1(&JsValue::UNDEFINED, error).unwrap();
            }
            None => self
                .waiting
                .borrow_mut()
                .push((field, value.clone(), resolve)),
        })
    }
}

fn json_text(value: &JsValue) -> String {
    js_sys::JSON::stringify(value).unwrap().into()
}

fn class_name(error: &JsValue) -> String {
    get(error, "name").as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn a_refused_write_is_undone_and_reported_as_a_compensating_write() {
    let t = tag("refused");
    let owner = log_in().await;
    let a = open(&owner, "refused-a").await;
    let owner_id = owner.id();
    let text = format!("{t} by its owner");
    write(&a, move |db| {
        db.create(
            "Note".into(),
            obj(&[
                ("owner", owner_id.as_str().into()),
                ("text", text.as_str().into()),
            ]),
            None,
        )
        .unwrap();
    })
    .await;
    settle(&a).await;

    let errors = ErrorLog::default();
    let b = open_with(&log_in().await, "refused-b", Some(&errors.callback())).await;
    settle(&b).await;
    let notes = |db: &Eddy| {
        db.objects("Note".into())
            .unwrap()
            .filtered(
                "text BEGINSWITH $0".into(),
                t.as_str().into(),
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
            )
            .unwrap()
    };
    let note = notes(&b).at(0).unwrap();
    assert!(
        !note.is_undefined(),
        "B must have the note before it forges it"
    );
    let key = get(&note, "_id");

    // B is not the owner: the server refuses both the edit and a note B claims for someone else.
    let (forged, not_mine) = (format!("{t} forged"), format!("{t} not mine"));
    let refused = errors.with("code", 232.into());
    write(&b, move |db| {
        Reflect::set(&note, &"text".into(), &forged.as_str().into()).unwrap();
        db.create(
            "Note".into(),
            obj(&[
                ("owner", "someone-else".into()),
                ("text", not_mine.as_str().into()),
            ]),
            None,
        )
        .unwrap();
    })
    .await;
    assert_eq!(
        notes(&b).length().unwrap(),
        2,
        "the writes apply locally first"
    );
    let error = within("the compensating-write error", refused).await;
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(class_name(&error), "CompensatingWriteError");
    assert_eq!(get(&error, "action"), "warning");
    let writes = Array::from(&get(&error, "writes"));
    assert!(writes.length() >= 1, "the error lists the refused writes");
    assert!(writes.iter().all(|w| get(&w, "objectName") == "Note"));

    // The server restores B's copy: the edit is undone and the claimed note is gone.
    settle(&b).await;
    let json = notes(&b).to_json().unwrap();
    assert_eq!(json.length(), 1, "{:?}", json);
    let restored = json.get(0);
    assert_eq!(json_text(&get(&restored, "_id")), json_text(&key));
    assert_eq!(
        get(&restored, "text").as_string().unwrap(),
        format!("{t} by its owner")
    );
    settle(&a).await;
    assert_eq!(
        titles_of_notes(&notes(&a)),
        vec![format!("{t} by its owner")]
    );
    close(&a).await;
    close(&b).await;
}

fn titles_of_notes(results: &Results) -> Vec<String> {
    results
        .to_json()
        .unwrap()
        .iter()
        .map(|n| get(&n, "text").as_string().unwrap())
        .collect()
}

#[wasm_bindgen_test]
async fn tokens_are_refreshed_before_they_expire_and_the_session_goes_on() {
    let t = tag("token");
    let user = log_in_at(short_token_server_url()).await;
    let first_token = user.access_token();
    let errors = ErrorLog::default();
    let db = open_with(&user, "token", Some(&errors.callback())).await;
    settle(&db).await;
    // Tokens live 3 s at most: across 7 s the client renews them ahead of expiry, with REFRESH
    // on the live session, so the server never ends the session for an expired token (202).
    for round in 0..7 {
        let title = format!("{t} {round}");
        write(&db, move |db| {
            add_task(db, &title);
        })
        .await;
        gloo_timers::future::TimeoutFuture::new(1_000).await;
    }
    settle(&db).await;
    let reported: Vec<JsValue> = errors.seen.borrow().clone();
    assert!(
        reported.is_empty(),
        "no error may reach the app, got {reported:?}"
    );
    assert_ne!(
        user.access_token(),
        first_token,
        "the client fetched new tokens"
    );

    let other = open(&log_in_at(short_token_server_url()).await, "token-check").await;
    settle(&other).await;
    let expected: Vec<String> = (0..7).map(|round| format!("{t} {round}")).collect();
    assert_eq!(titles(&tasks_tagged(&other, &t)), expected);
    close(&db).await;
    close(&other).await;
}

#[wasm_bindgen_test]
async fn a_revoked_refresh_token_reaches_the_app_as_an_auth_error() {
    let user = log_in_at(short_token_server_url()).await;
    let errors = ErrorLog::default();
    let db = open_with(&user, "revoked", Some(&errors.callback())).await;
    settle(&db).await;
    let signed_out = user.clone();
    within(
        "logging out",
        wasm_bindgen_futures::future_to_promise(async move {
            signed_out.log_out().await?;
            Ok(JsValue::UNDEFINED)
        }),
    )
    .await;
    // The access token still works until it expires; then the refresh is refused.
    let error = within(
        "the refused refresh (tokens live 3 s at most)",
        errors.with("name", "AuthError".into()),
    )
    .await;
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&error, "code"), 401);
    assert_eq!(get(&error, "action"), "logOut");
    assert!(
        get(&error, "message")
            .as_string()
            .unwrap()
            .contains("log in again"),
        "{error:?}"
    );
    close(&db).await;
}

/// A promise that resolves to `promise`'s rejection, or to `"resolved"` if it resolves.
fn rejection_of(promise: &Promise) -> Promise {
    Function::new_with_args("p", "return p.then(() => 'resolved', (e) => e);")
        .call1(&JsValue::UNDEFINED, promise)
        .unwrap()
        .unchecked_into()
}

/// How [`break_next_put`] makes IndexedDB fail.
#[derive(Clone, Copy)]
enum Failure {
    /// The transaction aborts right after its first `put`, as the browser aborts one it cannot
    /// commit.
    Abort,
    /// The first `put` throws a `QuotaExceededError`, as when the origin's quota is used up.
    Quota,
}

/// Makes the next `IDBObjectStore.put` fail as `failure` says; returns a function that undoes
/// it (the first `put` undoes it too).
fn break_next_put(failure: Failure) -> Function {
    let install = Function::new_with_args(
        "failure",
        r#"
        const proto = IDBObjectStore.prototype;
        const put = proto.put;
        proto.put = function (...args) {
          proto.put = put;
          if (failure === "quota") {
            throw new DOMException("the origin's storage quota is used up", "QuotaExceededError");
          }
          const request = put.apply(this, args);
          this.transaction.abort();
          return request;
        };
        return () => { proto.put = put; };
        "#,
    );
    let failure = match failure {
        Failure::Abort => "abort",
        Failure::Quota => "quota",
    };
    install
        .call1(&JsValue::UNDEFINED, &failure.into())
        .unwrap()
        .unchecked_into()
}

/// Writes a task while the next `put` fails as `failure` says; returns the write's rejection
/// and the error `onError` got.
async fn failed_write(failure: Failure) -> (JsValue, JsValue) {
    let errors = ErrorLog::default();
    let db = open_with(&log_in().await, "broken-storage", Some(&errors.callback())).await;
    settle(&db).await;
    let restore = break_next_put(failure);
    let handle = db.clone();
    let add = Closure::once_into_js(move || add_task(&handle, "never durable"));
    let durable = db.write(add.unchecked_ref()).unwrap();
    let outcome = within("the write's promise to settle", rejection_of(&durable)).await;
    restore.call0(&JsValue::UNDEFINED).unwrap();
    assert_ne!(
        outcome, "resolved",
        "a write that was not stored must not resolve"
    );
    let reported = within(
        "the storage error to reach onError",
        errors.with("name", "StorageError".into()),
    )
    .await;
    close(&db).await;
    (outcome, reported)
}

#[wasm_bindgen_test]
async fn a_failed_indexeddb_transaction_reaches_the_app_as_a_storage_error() {
    let (outcome, reported) = failed_write(Failure::Abort).await;
    for error in [&outcome, &reported] {
        assert!(error.is_instance_of::<js_sys::Error>());
        assert_eq!(class_name(error), "StorageError");
        assert_eq!(get(error, "code"), "storage");
        assert!(
            get(error, "message")
                .as_string()
                .unwrap()
                .starts_with("IndexedDB failed"),
            "{error:?}"
        );
    }
}

#[wasm_bindgen_test]
async fn a_quota_error_reaches_the_app_as_storage_quota() {
    let (outcome, reported) = failed_write(Failure::Quota).await;
    for error in [&outcome, &reported] {
        assert_eq!(class_name(error), "StorageError");
        assert_eq!(get(error, "code"), "storage-quota", "{error:?}");
        assert_eq!(get(error, "action"), "warning");
        assert!(
            get(error, "message")
                .as_string()
                .unwrap()
                .contains("quota exceeded"),
            "{error:?}"
        );
    }
}

/// Opens `path` with `sync.clientReset` set to `client_reset`.
async fn open_with_client_reset(user: &User, path: &str, client_reset: JsValue) -> Eddy {
    let sync = obj(&[
        ("user", JsValue::from(user.clone())),
        ("flexible", true.into()),
        ("clientReset", client_reset),
    ]);
    let config = obj(&[("schema", schema()), ("path", path.into()), ("sync", sync)]);
    Eddy::open(config).await.unwrap()
}

/// A database, opened with `sync.clientReset` `{ mode }`, that synced one task with the main
/// server and wrote a second one while paused, then closed. Returns that `clientReset`
/// configuration and the tag the two titles (`"<tag> synced"`, `"<tag> unsynced"`) start with.
async fn database_the_restored_server_never_saw(mode: &str) -> (JsValue, String) {
    let t = tag(mode);
    let (synced, unsynced) = (format!("{t} synced"), format!("{t} unsynced"));
    let config = obj(&[("mode", mode.into())]);
    let db = open_with_client_reset(
        &log_in_as_reset_user(server_url()).await,
        &t,
        config.clone(),
    )
    .await;
    write(&db, move |db| {
        add_task(db, &synced);
    })
    .await;
    settle(&db).await;
    db.sync_session().pause();
    write(&db, move |db| {
        add_task(db, &unsynced);
    })
    .await;
    close(&db).await;
    (config, t)
}

/// [`database_the_restored_server_never_saw`] reopened against the restored server, which has
/// never heard of its client file: the first connection resets it in `mode`. Returns the
/// database, what `onAfter` got, and the tag.
async fn reset_by_a_restored_server(mode: &str) -> (Eddy, JsValue, String) {
    let (config, t) = database_the_restored_server_never_saw(mode).await;
    let mut on_after = None;
    let reset = Promise::new(&mut |resolve, _| on_after = Some(resolve));
    Reflect::set(&config, &"onAfter".into(), &on_after.unwrap()).unwrap();
    let restored = log_in_as_reset_user(restored_server_url()).await;
    let db = open_with_client_reset(&restored, &t, config).await;
    let summary = within("sync.clientReset.onAfter", reset).await;
    (db, summary, t)
}

#[wasm_bindgen_test]
async fn a_client_reset_recovers_the_writes_a_restored_server_never_saw() {
    let (db, summary, t) = reset_by_a_restored_server("recoverUnsyncedChanges").await;
    assert_eq!(json_text(&summary), r#"{"recovered":1,"discarded":0}"#);
    let unsynced = format!("{t} unsynced");
    // The synced task was lost with the server's data; the unsynced one was re-applied and
    // reaches the restored server.
    assert_eq!(titles(&tasks_tagged(&db, &t)), vec![unsynced.clone()]);
    settle(&db).await;
    close(&db).await;
    let other = open(&log_in_at(restored_server_url()).await, &tag("other")).await;
    subscribe_to_prefix(&other, &t).await;
    assert_eq!(titles(&tasks_tagged(&other, &t)), vec![unsynced]);
    close(&other).await;
}

#[wasm_bindgen_test]
async fn a_client_reset_in_discard_mode_drops_and_counts_the_unsynced_writes() {
    let (db, summary, t) = reset_by_a_restored_server("discardUnsyncedChanges").await;
    assert_eq!(json_text(&summary), r#"{"recovered":0,"discarded":1}"#);
    assert!(titles(&tasks_tagged(&db, &t)).is_empty());
    settle(&db).await;
    close(&db).await;
}

#[wasm_bindgen_test]
async fn recover_or_discard_recovers_and_on_before_sees_the_local_data_read_only() {
    let mode = "recoverOrDiscardUnsyncedChanges";
    let (config, t) = database_the_restored_server_never_saw(mode).await;
    // onBefore records the titles it sees and whether a write is refused.
    let on_before = Function::new_with_args(
        "before",
        &format!(
            r#"let refused = "";
            try {{ before.write(() => {{}}); }} catch (e) {{ refused = e.message; }}
            const titles = before.objects("Task").filtered("title BEGINSWITH $0", "{t}")
              .sorted("title").toJSON().map((task) => task.title);
            globalThis.onBeforeSaw = {{ titles, refused }};"#
        ),
    );
    Reflect::set(&config, &"onBefore".into(), &on_before).unwrap();
    let mut on_after = None;
    let reset = Promise::new(&mut |resolve, _| on_after = Some(resolve));
    Reflect::set(&config, &"onAfter".into(), &on_after.unwrap()).unwrap();
    let restored = log_in_as_reset_user(restored_server_url()).await;
    let db = open_with_client_reset(&restored, &t, config).await;
    let summary = within("sync.clientReset.onAfter", reset).await;
    assert_eq!(json_text(&summary), r#"{"recovered":1,"discarded":0}"#);
    let saw = get(&js_sys::global(), "onBeforeSaw");
    assert_eq!(
        json_text(&get(&saw, "titles")),
        format!(r#"["{t} synced","{t} unsynced"]"#)
    );
    let refused = get(&saw, "refused").as_string().unwrap();
    assert!(refused.contains("read-only"), "{refused}");
    assert_eq!(
        titles(&tasks_tagged(&db, &t)),
        vec![format!("{t} unsynced")]
    );
    settle(&db).await;
    close(&db).await;
}

#[wasm_bindgen_test]
async fn a_manual_client_reset_stops_sync_until_the_app_deletes_the_database() {
    let (config, t) = database_the_restored_server_never_saw("manual").await;
    let mut told = None;
    let manual = Promise::new(&mut |resolve, _| told = Some(resolve));
    let told = told.unwrap();
    let on_manual = Closure::once_into_js(move |session: JsValue, path: JsValue| {
        told.call1(&JsValue::UNDEFINED, &Array::of2(&session, &path))
            .unwrap();
    });
    Reflect::set(&config, &"onManual".into(), &on_manual).unwrap();
    let restored = log_in_as_reset_user(restored_server_url()).await;
    let db = open_with_client_reset(&restored, &t, config.clone()).await;
    let told = Array::from(&within("sync.clientReset.onManual", manual).await);
    assert_eq!(told.get(1), JsValue::from(t.as_str()));
    assert_eq!(get(&told.get(0), "state"), JsValue::from("inactive"));
    // Nothing was reset, and sync stays stopped.
    assert_eq!(
        titles(&tasks_tagged(&db, &t)),
        vec![format!("{t} synced"), format!("{t} unsynced")]
    );
    db.sync_session().resume();
    assert_eq!(db.sync_session().state(), "inactive");

    let target = obj(&[
        ("path", t.as_str().into()),
        ("sync", obj(&[("user", JsValue::from(restored.clone()))])),
    ]);
    let open_error = Eddy::delete_database(target.clone()).await.err().unwrap();
    assert_eq!(get(&open_error, "code"), JsValue::from("database-in-use"));
    close(&db).await;
    Eddy::delete_database(target).await.unwrap();
    // Opened again, the database is new: empty, and it syncs with the restored server.
    let db = open_with_client_reset(&restored, &t, config).await;
    assert!(titles(&tasks_tagged(&db, &t)).is_empty());
    settle(&db).await;
    assert_eq!(db.sync_session().state(), "active");
    close(&db).await;
}

#[wasm_bindgen_test]
async fn unsupported_client_reset_settings_are_refused() {
    let user = log_in().await;
    for (config, expected) in [
        (
            obj(&[("mode", "later".into())]),
            "sync.clientReset.mode \"later\" is not supported",
        ),
        (
            obj(&[
                ("mode", "manual".into()),
                ("onAfter", Function::new_no_args("").into()),
            ]),
            "sync.clientReset.onBefore and onAfter are never called in mode \"manual\"",
        ),
    ] {
        let sync = obj(&[
            ("user", JsValue::from(user.clone())),
            ("flexible", true.into()),
            ("clientReset", config),
        ]);
        let open = Eddy::open(obj(&[("schema", schema()), ("sync", sync)]));
        let error = open.await.err().unwrap();
        let message = get(&error, "message").as_string().unwrap();
        assert!(message.starts_with(expected), "{message}");
        assert_eq!(get(&error, "code"), JsValue::from("usage"));
    }
}
