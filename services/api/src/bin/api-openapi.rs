//! Prints the api's OpenAPI document: `api-openapi [json|yaml]`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let doc = pmcore_api::openapi::document();
    let format = std::env::args().nth(1).unwrap_or_else(|| "json".to_owned());
    let text = match format.as_str() {
        "json" => serde_json::to_string_pretty(&doc).map_err(|e| e.to_string()),
        "yaml" => serde_yaml::to_string(&doc).map_err(|e| e.to_string()),
        other => Err(format!("unknown format `{other}`: use json or yaml")),
    };
    match text {
        Ok(text) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("api-openapi: {e}");
            ExitCode::FAILURE
        }
    }
}
