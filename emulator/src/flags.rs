//! Server flags: the answers of `client/config` (PROTOCOL.md 5.3) and `client/dynamic_config`
//! (5.4). Every flag is settable — at start-up ([`crate::EmulatorConfig::client_config`],
//! `--client-config JSON`) and live through `POST /_emulator/flags` — so each client rule
//! that depends on a flag can be tested end to end.

use serde_json::{Map, Value};
use std::sync::Mutex;
use tinkex::core::types::{ClientConfig, DynamicConfig};

/// The current flag answers.
pub struct Flags {
    client: Mutex<Map<String, Value>>,
    dynamic: Mutex<Map<String, Value>>,
}

fn defaults<T: serde::Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Applies `overrides` onto `map`: a `null` value removes the key (the client then uses its
/// own default), anything else replaces it.
fn merge(map: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (k, v) in overrides {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
}

impl Flags {
    /// The official defaults, with `client` and `dynamic` applied over them.
    pub fn new(client: &Map<String, Value>, dynamic: &Map<String, Value>) -> Self {
        let mut c = defaults(&ClientConfig::default());
        merge(&mut c, client);
        let mut d = defaults(&DynamicConfig::default());
        merge(&mut d, dynamic);
        Flags {
            client: Mutex::new(c),
            dynamic: Mutex::new(d),
        }
    }

    /// The `client/config` answer.
    pub fn client_config(&self) -> Map<String, Value> {
        self.client.lock().unwrap().clone()
    }

    /// The `client/dynamic_config` answer.
    pub fn dynamic_config(&self) -> Map<String, Value> {
        self.dynamic.lock().unwrap().clone()
    }

    /// One `client/config` flag as a bool (false when absent or not a bool).
    pub fn client_bool(&self, name: &str) -> bool {
        self.client
            .lock()
            .unwrap()
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// One `client/config` flag as an integer.
    pub fn client_u64(&self, name: &str) -> Option<u64> {
        self.client
            .lock()
            .unwrap()
            .get(name)
            .and_then(Value::as_u64)
    }

    /// One `client/dynamic_config` flag as a bool (false when absent or not a bool).
    pub fn dynamic_bool(&self, name: &str) -> bool {
        self.dynamic
            .lock()
            .unwrap()
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Applies `{"client_config": {...}, "dynamic_config": {...}}` (either part optional;
    /// `null` removes a flag).
    pub fn update(&self, body: &Map<String, Value>) -> Result<(), String> {
        for key in body.keys() {
            if key != "client_config" && key != "dynamic_config" {
                return Err(format!(
                    "unknown key {key:?}: expected client_config and/or dynamic_config"
                ));
            }
        }
        for (key, target) in [
            ("client_config", &self.client),
            ("dynamic_config", &self.dynamic),
        ] {
            match body.get(key) {
                None => {}
                Some(Value::Object(o)) => merge(&mut target.lock().unwrap(), o),
                Some(_) => return Err(format!("{key} must be an object")),
            }
        }
        Ok(())
    }

    /// Both answers, for `GET /_emulator/flags`.
    pub fn snapshot(&self) -> Value {
        serde_json::json!({
            "client_config": self.client_config(),
            "dynamic_config": self.dynamic_config(),
        })
    }
}
