//! Fuzzes the plugin output path: `read_bounded_line` splitting raw bytes into
//! bounded lines, and `parse_hclog_line` on each line and on the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugvisor::stdio::{HclogLine, Line, parse_hclog_line, read_bounded_line};
use serde_json::Value;

/// Small limits, so that fuzz inputs reach them.
const MAX_LINE: usize = 64;
const BUFFER: usize = 7;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_hclog(&text);

    let mut reader = tokio::io::BufReader::with_capacity(BUFFER, data);
    let mut consumed = 0;
    loop {
        let next = futures::executor::block_on(read_bounded_line(&mut reader, MAX_LINE))
            .expect("reading a slice does not fail");
        let Some(line) = next else { break };
        let rest = &data[consumed..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let whole = &rest[..end];
        consumed += end;
        match &line {
            Line::Complete(bytes) => assert_eq!(bytes.as_slice(), whole),
            Line::Truncated(bytes) => {
                assert!(whole.len() > MAX_LINE);
                assert_eq!(bytes.as_slice(), &whole[..MAX_LINE]);
            }
        }
        let text = line.text();
        assert!(!text.ends_with('\n') && !text.ends_with('\r'));
        check_hclog(&text);
    }
    assert_eq!(consumed, data.len(), "every byte was read");
});

fn check_hclog(line: &str) {
    let Some(HclogLine {
        message, fields, ..
    }) = parse_hclog_line(line)
    else {
        return;
    };
    // Only JSON objects with a string "@level" are hclog lines.
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line.trim()) else {
        panic!("{line:?} parsed as hclog but is not a JSON object");
    };
    assert!(object["@level"].is_string(), "{line:?}");
    assert_eq!(
        message,
        object.get("@message").and_then(Value::as_str).unwrap_or(""),
        "{line:?}"
    );
    let hidden = ["@level", "@message", "@timestamp"];
    let shown = object
        .keys()
        .filter(|k| !hidden.contains(&k.as_str()))
        .count();
    assert_eq!(fields.len(), shown, "{line:?}");
    // hclog's own '@' prefix is dropped from the keys shown.
    for (key, _) in &fields {
        assert!(!key.starts_with('@'), "{line:?}");
    }
}
