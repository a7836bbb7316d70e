//! Component tests in a real browser (`wasm-bindgen-test` in headless Chromium): each mounts one
//! piece of the console into the page and checks what it renders and how it reacts to clicks.
//!
//! `./dev test` runs them with `wasm-bindgen-test-runner`; they do not build for the host.

#![cfg(target_arch = "wasm32")]
// Tests fail loudly by design.
#![allow(clippy::unwrap_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use eddy_console::model::{Decision, DecisionSide, Event, Model};
use eddy_console::routes::login::Login;
use eddy_console::routes::sessions::Sessions;
use eddy_console::widgets::{ChangesetItem, MessageItem};
use eddy_console::{Console, Page};
use eddy_core::changeset::{encode_changeset, Instruction, Path};
use eddy_core::protocol::{encode_client_message, ClientMessage, UploadChangeset};
use eddy_core::value::{PrimaryKey, Value};
use leptos::mount::mount_to;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn set_n(key: i64, n: i64) -> Instruction {
    Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(key), "n"),
        value: Value::Int(n),
    }
}

/// A fresh element in the page to mount into.
fn container() -> web_sys::HtmlElement {
    let doc = document();
    let div = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&div).unwrap();
    div.unchecked_into()
}

fn find(root: &web_sys::HtmlElement, selector: &str) -> web_sys::HtmlElement {
    root.query_selector(selector)
        .unwrap()
        .unwrap_or_else(|| panic!("nothing matches {selector} in {}", root.inner_html()))
        .unchecked_into()
}

fn text(root: &web_sys::HtmlElement) -> String {
    root.text_content().unwrap_or_default()
}

/// Lets the reactive system run what a change scheduled.
async fn settle() {
    for _ in 0..3 {
        leptos::task::tick().await;
    }
}

#[wasm_bindgen_test]
async fn a_changeset_opens_to_its_instructions_and_merge_decisions() {
    let side = |i: &Instruction, outcome: &str| DecisionSide {
        original: BASE64.encode(encode_changeset(std::slice::from_ref(i))),
        outcome: outcome.into(),
        ..DecisionSide::default()
    };
    let event = Event {
        seq: 1,
        kind: "changeset".into(),
        server_version: Some(7),
        client: Some(42),
        user: Some("anon-1".into()),
        objects: vec!["Item/1".into()],
        instructions: Some(BASE64.encode(encode_changeset(&[set_n(1, 3)]))),
        decisions: vec![Decision {
            rule: "LastWriterWins".into(),
            ours: side(&set_n(1, 3), "kept"),
            theirs: DecisionSide {
                server_version: Some(5),
                client: Some(0x2b),
                ..side(&set_n(1, 2), "discarded")
            },
        }],
        body_count: Some(1),
        compressed_bodies: Some(0),
        body_bytes: Some(20),
        body_uncompressed_bytes: Some(20),
        ..Event::default()
    };
    let console = Console::new(Some("key".into()), Page::Sessions);
    let root = container();
    let _mounted = mount_to(root.clone(), move || {
        provide_context(console);
        view! { <ChangesetItem event=event /> }
    });
    assert!(text(&root).contains("v7"));
    assert!(text(&root).contains("1 merge decisions"));
    assert_eq!(
        text(&find(&root, "[data-testid=changeset-size]")),
        "20 B encoded, 20 B uncompressed"
    );
    assert!(root
        .query_selector("[data-testid=changeset-instructions]")
        .unwrap()
        .is_none());

    find(&root, "[data-testid=changeset-row]").click();
    settle().await;
    let instructions = find(&root, "[data-testid=changeset-instructions]");
    assert_eq!(text(&instructions), "Set Item[1].n = 3");
    let decision = text(&find(&root, "[data-testid=merge-decision]"));
    assert!(decision.contains("LastWriterWins"), "{decision}");
    assert!(
        decision.contains("v5 instruction #0: Set Item[1].n = 2 — discarded"),
        "{decision}"
    );
    assert_eq!(
        text(&find(&root, "[data-testid=decision-headline]")),
        "overrode v5 (client 0x2b) by rule LastWriterWins"
    );
    // The link opens the concurrent changeset on the Changesets page.
    find(&root, "[data-testid=decision-link]").click();
    settle().await;
    assert_eq!(console.page.get_untracked(), Page::Changesets);
    assert_eq!(console.changeset_version.get_untracked(), "5");
}

#[wasm_bindgen_test]
async fn a_message_decodes_its_raw_frame_when_opened() {
    let frame = encode_client_message(&ClientMessage::Upload {
        session: 1,
        download_server_version: 1,
        changesets: vec![UploadChangeset {
            client_version: 3,
            last_integrated_server_version: 1,
            origin_timestamp: 0,
            origin_file_ident: 42,
            body: encode_changeset(&[set_n(5, 6)]),
        }],
    });
    let event = Event {
        seq: 2,
        kind: "message".into(),
        direction: Some("in".into()),
        message_type: Some("UPLOAD".into()),
        size: Some(frame.len() as u64),
        raw: Some(BASE64.encode(&frame)),
        ..Event::default()
    };
    let root = container();
    let _mounted = mount_to(root.clone(), move || view! { <MessageItem event=event /> });
    assert!(text(&root).contains("client → server"));
    find(&root, "button").click();
    settle().await;
    let decoded = text(&find(&root, "[data-testid=message-decoded]"));
    assert!(decoded.contains("client version 3"), "{decoded}");
    assert!(decoded.contains("Set Item[5].n = 6"), "{decoded}");
}

#[wasm_bindgen_test]
async fn the_sessions_page_shows_an_empty_state_then_a_live_row_and_its_timeline() {
    let console = Console::new(Some("key".into()), Page::Sessions);
    let root = container();
    let _mounted = mount_to(root.clone(), move || {
        provide_context(console);
        view! { <Sessions /> }
    });
    find(&root, "[data-testid=sessions-empty]");

    let event = |json: serde_json::Value| eddy_console::model::parse(&json.to_string()).unwrap();
    console.model.update(|m: &mut Model| {
        m.apply(event(serde_json::json!({
            "seq": 1, "kind": "session", "event": "identified", "connection": 3, "session": 1,
            "user": "anon-1", "client": 42, "peer": "127.0.0.1:1", "protocol": "eddy-sync/5",
        })));
        m.apply(event(serde_json::json!({
            "seq": 2, "kind": "message", "connection": 3, "session": 1, "direction": "out",
            "type": "DOWNLOAD", "size": 20, "raw": "",
        })));
    });
    settle().await;
    let row = find(&root, "[data-testid=session-row]");
    assert_eq!(text(&find(&row, "[data-testid=session-client]")), "42");
    row.click();
    settle().await;
    let timeline = text(&find(&root, "[data-testid=timeline]"));
    assert!(timeline.contains("DOWNLOAD"), "{timeline}");
    assert!(timeline.contains("server → client"), "{timeline}");
}

#[wasm_bindgen_test]
async fn login_refuses_an_empty_key_without_asking_the_server() {
    let console = Console::new(None, Page::Overview);
    let refused = RwSignal::new(None::<String>);
    let root = container();
    let _mounted = mount_to(root.clone(), move || {
        provide_context(console);
        view! { <Login refused=refused /> }
    });
    find(&root, "[data-testid=login]").click();
    settle().await;
    let error = text(&find(&root, "[data-testid=login-error]"));
    assert!(error.contains("admin key"), "{error}");
    assert_eq!(console.key.get_untracked(), None);
}
