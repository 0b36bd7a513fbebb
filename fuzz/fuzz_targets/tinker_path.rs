//! `tinker://` path parsing: parse, and a parsed path prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinkex::core::types::TinkerPath;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = TinkerPath::parse(s) {
        assert_eq!(p.to_string(), s, "round trip");
        let id = p.checkpoint_id();
        assert!(id.starts_with(p.kind.segment()));
        assert_eq!(TinkerPath::parse(&p.to_string()).unwrap(), p);
    }
});
