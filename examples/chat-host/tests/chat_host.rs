//! The chat example end to end: its own hook (MessageWillBePosted) served by
//! a Python and a Go plugin, its own host API (GetUser) called by both.

use std::process::Command;

use plugvisor_testkit::{built_artifact, repo_root, test_python};

fn chat_host(args: &[&str]) -> (String, String) {
    built_artifact("examples/chat-host/plugins/greeter-go/server/dist");
    let output = Command::new(env!("CARGO_BIN_EXE_chat-host"))
        .arg("--python")
        .arg(test_python())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn messages_go_through_every_plugin_in_turn() {
    let plugins = repo_root().join("examples/chat-host/plugins");
    let (stdout, stderr) = chat_host(&[
        plugins.to_str().unwrap(),
        "u1:hello everyone",
        "u2:buy spam now",
        "u9:hi there",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            // greeter-go (Go) put the author's name in front.
            "posted: [Ada] hello everyone",
            // censor-python (Python) found the banned word and named its author.
            "rejected by censor-python: Grace, your message was not posted: it contains the banned word 'spam'.",
            // An unknown author: the greeter leaves the text as it was.
            "posted: hi there",
        ],
        "{stderr}"
    );
    // Each host API call knew which plugin made it.
    assert!(
        stderr.contains("greeter-go looked up user \"u1\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("censor-python looked up user \"u2\""),
        "{stderr}"
    );
}

#[test]
fn a_fan_out_asks_every_plugin_at_once_with_the_host_configuration() {
    let plugins = repo_root().join("examples/chat-host/plugins");
    let (stdout, _) = chat_host(&[
        "--fan-out",
        "--banned",
        "hello",
        plugins.to_str().unwrap(),
        "u1:hello everyone",
    ]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "censor-python: rejects: Ada, your message was not posted: it contains the banned word 'hello'.",
            "greeter-go: posts: [Ada] hello everyone",
        ]
    );
}
