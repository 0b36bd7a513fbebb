//! `docs/schema/`: the JSON Schema of every JSON that crosses the C ABI, generated from the
//! core's types (feature `schema`). `TINKEX_UPDATE_SCHEMA=1 cargo test --release --features
//! tinkex/schema --test schema` rewrites the files; otherwise this test fails when a committed
//! file differs from what the types generate, or when a file is missing or left over (the CI
//! staleness check).
#![cfg(feature = "schema")]

use schemars::JsonSchema;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tinkex::core::config::ConfigInput;
use tinkex::core::events::Event;
use tinkex::core::requests::*;
use tinkex::core::types::*;

/// Which export takes or returns which schema: (export, input schema, result schema). The
/// schema names are file names under docs/schema (without `.json`); "-" means none.
const EXPORTS: &[(&str, &str, &str)] = &[
    ("tinkex_service_client_new", "ConfigInput", "-"),
    (
        "tinkex_service_client_get_server_capabilities",
        "-",
        "ServerCapabilities",
    ),
    (
        "tinkex_service_client_create_lora_training_client",
        "CreateLoraTrainingClientInput",
        "(training client)",
    ),
    (
        "tinkex_service_client_create_training_client_from_state",
        "CreateTrainingClientFromStateInput",
        "(training client)",
    ),
    (
        "tinkex_service_client_create_sampling_client",
        "CreateSamplingClientInput",
        "(sampling client)",
    ),
    ("tinkex_service_client_close", "CloseInput", "Empty"),
    ("tinkex_training_client_get_info", "-", "GetInfoResponse"),
    (
        "tinkex_training_client_forward_backward",
        "ForwardBackwardInput",
        "ForwardBackwardOutput",
    ),
    (
        "tinkex_training_client_forward",
        "ForwardBackwardInput",
        "ForwardBackwardOutput",
    ),
    (
        "tinkex_training_client_forward_backward_batch",
        "LossInput",
        "ForwardBackwardOutput",
    ),
    (
        "tinkex_training_client_forward_batch",
        "LossInput",
        "ForwardBackwardOutput",
    ),
    (
        "tinkex_training_client_optim_step",
        "OptimStepInput",
        "OptimStepResult",
    ),
    (
        "tinkex_training_client_save_state",
        "SaveStateInput",
        "SavedPath",
    ),
    (
        "tinkex_training_client_save_weights_for_sampler",
        "SaveWeightsForSamplerInput",
        "SavedPath",
    ),
    (
        "tinkex_training_client_save_weights_and_get_sampling_client",
        "SaveWeightsAndGetSamplingClientInput",
        "(sampling client)",
    ),
    (
        "tinkex_training_client_save_weights_external",
        "SaveWeightsExternalInput",
        "SaveWeightsExternalResult",
    ),
    ("tinkex_training_client_get_console_url", "-", "(string)"),
    (
        "tinkex_service_client_create_custom_loss",
        "CreateCustomLossInput",
        "CreateCustomLossResult",
    ),
    (
        "tinkex_service_client_resume_training_run",
        "ResumeTrainingRunInput",
        "(training client)",
    ),
    ("tinkex_service_client_get_console_url", "-", "(string)"),
    (
        "tinkex_training_client_load_state",
        "LoadStateInput",
        "LoadWeightsResponse",
    ),
    ("tinkex_datum_batch_push_json", "Datum", "-"),
    (
        "tinkex_custom_loss_set_metrics",
        "CustomLossMetricsInput",
        "-",
    ),
    ("tinkex_tinker_path_parse", "-", "TinkerPathInfo"),
    ("tinkex_sampling_client_get_info", "-", "SamplingClientInfo"),
    (
        "tinkex_sampling_client_sample",
        "SampleInput",
        "SampleResponse",
    ),
    (
        "tinkex_sampling_client_compute_logprobs",
        "ComputeLogprobsInput",
        "ComputeLogprobsOutput",
    ),
    (
        "tinkex_rest_client_call list_training_runs",
        "(args: methods.json)",
        "TrainingRunsResponse",
    ),
    (
        "tinkex_rest_client_call get_training_run",
        "(args: methods.json)",
        "TrainingRun",
    ),
    (
        "tinkex_rest_client_call list_checkpoints",
        "(args: methods.json)",
        "CheckpointsListResponse",
    ),
    (
        "tinkex_rest_client_call list_user_checkpoints",
        "(args: methods.json)",
        "CheckpointsListResponse",
    ),
    (
        "tinkex_rest_client_call delete_checkpoint",
        "(args: methods.json)",
        "(null)",
    ),
    (
        "tinkex_rest_client_call get_weights_info_by_tinker_path",
        "(args: methods.json)",
        "WeightsInfoResponse",
    ),
    (
        "tinkex_rest_client_call (other methods)",
        "(args: methods.json)",
        "(result: methods.json)",
    ),
    (
        "tinkex_admin_client_call",
        "(args: methods.json)",
        "(result: methods.json)",
    ),
    (
        "tinkex_service_client_copy_weights",
        "(path, ttl_seconds?, weights_access_token?)",
        "(tinker path string)",
    ),
    ("tinkex_event_json", "-", "Event"),
    ("tinkex_service_client_status", "-", "StatusReport"),
    ("tinkex_training_client_status", "-", "StatusReport"),
    ("tinkex_sampling_client_status", "-", "StatusReport"),
    (
        "tinkex_sampling_client_get_sampler_handle",
        "-",
        "(JSON string)",
    ),
    (
        "tinkex_sampling_client_from_sampler_handle",
        "ConfigInput",
        "(sampling client)",
    ),
];

fn schema_of<T: JsonSchema>(name: &str) -> (String, Value) {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap();
    // The file name is the title, also for aliases (ComputeLogprobsOutput = Vec<...>).
    v["title"] = Value::String(name.to_string());
    (name.to_string(), v)
}

/// Every schema, by file name.
fn schemas() -> BTreeMap<String, Value> {
    [
        // Inputs.
        schema_of::<ConfigInput>("ConfigInput"),
        schema_of::<CreateLoraTrainingClientInput>("CreateLoraTrainingClientInput"),
        schema_of::<CreateTrainingClientFromStateInput>("CreateTrainingClientFromStateInput"),
        schema_of::<CreateSamplingClientInput>("CreateSamplingClientInput"),
        schema_of::<CloseInput>("CloseInput"),
        schema_of::<tinkex::core::requests::CustomLossMetricsInput>("CustomLossMetricsInput"),
        schema_of::<tinkex::core::requests::TinkerPathInfo>("TinkerPathInfo"),
        schema_of::<ForwardBackwardInput>("ForwardBackwardInput"),
        schema_of::<LossInput>("LossInput"),
        schema_of::<OptimStepInput>("OptimStepInput"),
        schema_of::<SaveStateInput>("SaveStateInput"),
        schema_of::<SaveWeightsForSamplerInput>("SaveWeightsForSamplerInput"),
        schema_of::<LoadStateInput>("LoadStateInput"),
        schema_of::<SaveWeightsExternalInput>("SaveWeightsExternalInput"),
        schema_of::<SaveWeightsAndGetSamplingClientInput>("SaveWeightsAndGetSamplingClientInput"),
        schema_of::<CreateCustomLossInput>("CreateCustomLossInput"),
        schema_of::<ResumeTrainingRunInput>("ResumeTrainingRunInput"),
        schema_of::<SampleInput>("SampleInput"),
        schema_of::<ComputeLogprobsInput>("ComputeLogprobsInput"),
        schema_of::<Datum>("Datum"),
        // Results.
        schema_of::<ServerCapabilities>("ServerCapabilities"),
        schema_of::<Empty>("Empty"),
        schema_of::<GetInfoResponse>("GetInfoResponse"),
        schema_of::<ForwardBackwardOutput>("ForwardBackwardOutput"),
        schema_of::<OptimStepResult>("OptimStepResult"),
        schema_of::<SavedPath>("SavedPath"),
        schema_of::<SaveWeightsExternalResult>("SaveWeightsExternalResult"),
        schema_of::<LoadWeightsResponse>("LoadWeightsResponse"),
        schema_of::<CreateCustomLossResult>("CreateCustomLossResult"),
        schema_of::<SamplingClientInfo>("SamplingClientInfo"),
        schema_of::<SampleResponse>("SampleResponse"),
        schema_of::<ComputeLogprobsOutput>("ComputeLogprobsOutput"),
        schema_of::<TrainingRunsResponse>("TrainingRunsResponse"),
        schema_of::<TrainingRun>("TrainingRun"),
        schema_of::<CheckpointsListResponse>("CheckpointsListResponse"),
        schema_of::<WeightsInfoResponse>("WeightsInfoResponse"),
        schema_of::<Event>("Event"),
        schema_of::<tinkex::core::introspect::StatusReport>("StatusReport"),
    ]
    .into_iter()
    .collect()
}

fn index(schemas: &BTreeMap<String, Value>) -> String {
    let mut s = String::from(
        "# JSON Schema of the C ABI\n\n\
         Generated by `tests/schema.rs` from the core's types (`src/core/requests.rs`,\n\
         `src/core/config.rs`, `src/core/types/`); do not edit. Regenerate with\n\
         `TINKEX_UPDATE_SCHEMA=1 cargo test --release --features tinkex/schema --test schema`;\n\
         CI fails when a file is stale.\n\n\
         Each file is `<TypeName>.json` (JSON Schema 2020-12). Closed objects have\n\
         `\"additionalProperties\": false`: an unknown field is `TINKEX_STATUS_INVALID_JSON`,\n\
         naming the field. Open maps (`loss_fn_config`, `loss_fn_inputs`, `user_metadata`, an\n\
         unknown optimizer family's parameters) have an `additionalProperties` schema or `true`.\n\
         Result schemas describe what the library writes; readers should ignore fields they do\n\
         not know (results may gain fields).\n\n\
         | export | input (`json`) | result |\n|---|---|---|\n",
    );
    let cell = |name: &str| {
        if schemas.contains_key(name) {
            format!("[`{name}`]({name}.json)")
        } else {
            name.to_string()
        }
    };
    for (export, input, result) in EXPORTS {
        s.push_str(&format!(
            "| `{export}` | {} | {} |\n",
            cell(input),
            cell(result)
        ));
    }
    s
}

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema")
}

fn generated() -> BTreeMap<String, String> {
    let schemas = schemas();
    let mut files: BTreeMap<String, String> = schemas
        .iter()
        .map(|(name, v)| {
            (
                format!("{name}.json"),
                serde_json::to_string_pretty(v).unwrap() + "\n",
            )
        })
        .collect();
    files.insert("README.md".into(), index(&schemas));
    files
}

#[test]
fn every_export_names_a_known_schema() {
    let schemas = schemas();
    for (export, input, result) in EXPORTS {
        for name in [input, result] {
            assert!(
                *name == "-" || name.starts_with('(') || schemas.contains_key(*name),
                "{export}: no schema {name}"
            );
        }
    }
    for name in schemas.keys() {
        assert!(
            EXPORTS.iter().any(|(_, i, r)| i == name || r == name),
            "schema {name} is used by no export"
        );
    }
}

#[test]
fn closed_and_open_objects_are_marked() {
    let s = schemas();
    let defs = |name: &str| s[name]["$defs"].clone();
    // Closed models.
    assert_eq!(s["ConfigInput"]["additionalProperties"], false);
    assert_eq!(
        defs("ConfigInput")["RetryInput"]["additionalProperties"],
        false
    );
    assert_eq!(
        defs("OptimStepInput")["AdamParams"]["additionalProperties"],
        false
    );
    assert_eq!(
        defs("SampleInput")["SamplingParams"]["additionalProperties"],
        false
    );
    assert_eq!(
        defs("CreateLoraTrainingClientInput")["LoraConfig"]["additionalProperties"],
        false
    );
    let fb = defs("ForwardBackwardInput");
    for closed in ["Datum", "ModelInput", "TensorData"] {
        assert_eq!(fb[closed]["additionalProperties"], false, "{closed}");
    }
    // Open maps.
    let datum = &fb["Datum"]["properties"]["loss_fn_inputs"];
    assert_eq!(datum["additionalProperties"]["$ref"], "#/$defs/TensorData");
    let cfg = &s["ForwardBackwardInput"]["properties"]["loss_fn_config"];
    assert!(cfg.to_string().contains("LossConfigValue"), "{cfg}");
    let meta = &s["SaveStateInput"]["properties"]["user_metadata"];
    assert!(meta.to_string().contains("additionalProperties"), "{meta}");
    let other = &s["OptimStepInput"]["anyOf"][1];
    assert_eq!(other["additionalProperties"], true);
}

#[test]
fn docs_schema_is_up_to_date() {
    let dir = schema_dir();
    let files = generated();
    if std::env::var_os("TINKEX_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !files.contains_key(&name) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let mut problems = Vec::new();
    for (name, text) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => problems.push(format!("{name} is stale")),
            Err(_) => problems.push(format!("{name} is missing")),
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !files.contains_key(&name) {
                problems.push(format!("{name} is not generated (left over)"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/schema differs from the types: {problems:?}; regenerate with \
         TINKEX_UPDATE_SCHEMA=1 cargo test --release --features tinkex/schema --test schema"
    );
}
