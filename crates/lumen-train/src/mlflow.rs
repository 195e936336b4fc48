//! MLflow over its REST API (`/api/2.0/mlflow/...`): a run in an experiment, its
//! parameters, metrics (batched per epoch) and images as artifacts, uploaded through
//! the server's artifact proxy (`mlflow-artifacts:` runs, the default of
//! `mlflow server` since 2.0).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use image::RgbImage;
use serde_json::{Value, json};

use crate::sink::{Histogram, Moment, Sink, SinkError, SinkResult, png_bytes};

/// MLflow's `log-batch` accepts at most 1000 metrics per call.
const METRICS_PER_BATCH: usize = 1000;
/// How long one request may take before the sink gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs to one MLflow run.
pub struct Mlflow {
    base: String,
    agent: ureq::Agent,
    run_id: String,
    /// `api/2.0/mlflow-artifacts/artifacts/<experiment>/<run>/artifacts`, or `None`
    /// when the server stores artifacts where it cannot proxy them.
    artifact_root: Option<String>,
    pending: Vec<Value>,
}

fn millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn error(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError(format!("{what}: {e}"))
}

impl Mlflow {
    /// Start a run named `run_name` in `experiment` (created if missing) on the
    /// tracking server at `url` (`http://127.0.0.1:5000`).
    pub fn start(url: &str, experiment: &str, run_name: &str) -> Result<Self, SinkError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut client = Self {
            base: url.trim_end_matches('/').to_string(),
            agent,
            run_id: String::new(),
            artifact_root: None,
            pending: vec![],
        };
        let experiment_id = client.experiment_id(experiment)?;
        let run = client.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": millis(),
                "tags": [{"key": "mlflow.source.name", "value": "lumen-train"}],
            }),
        )?;
        let info = &run["run"]["info"];
        client.run_id = info["run_id"]
            .as_str()
            .ok_or_else(|| error("runs/create", format!("no run id in {run}")))?
            .to_string();
        client.artifact_root = info["artifact_uri"]
            .as_str()
            .and_then(|uri| uri.strip_prefix("mlflow-artifacts:/"))
            .map(|path| {
                format!(
                    "api/2.0/mlflow-artifacts/artifacts/{}",
                    path.trim_start_matches('/')
                )
            });
        Ok(client)
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn experiment_id(&self, name: &str) -> Result<String, SinkError> {
        let url = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.base);
        let mut response = self
            .agent
            .get(&url)
            .query("experiment_name", name)
            .call()
            .map_err(|e| error(&url, e))?;
        let found: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| error(&url, e))?;
        if let Some(id) = found["experiment"]["experiment_id"].as_str() {
            return Ok(id.to_string());
        }
        let created = self.post("experiments/create", &json!({ "name": name }))?;
        created["experiment_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| error("experiments/create", created))
    }

    fn post(&self, endpoint: &str, body: &Value) -> Result<Value, SinkError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let mut response = self
            .agent
            .post(&url)
            .send_json(body)
            .map_err(|e| error(&url, e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| error(&url, e))?;
        if !status.is_success() {
            return Err(error(&url, format!("{status}: {text}")));
        }
        serde_json::from_str(if text.is_empty() { "{}" } else { &text }).map_err(|e| error(&url, e))
    }

    fn send_pending(&mut self) -> SinkResult {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(METRICS_PER_BATCH);
            let batch: Vec<Value> = self.pending[..n].to_vec();
            self.post(
                "runs/log-batch",
                &json!({ "run_id": self.run_id, "metrics": batch }),
            )?;
            self.pending.drain(..n);
        }
        Ok(())
    }
}

impl Sink for Mlflow {
    fn name(&self) -> String {
        format!("mlflow {} run {}", self.base, self.run_id)
    }

    fn params(&mut self, params: &[(String, String)]) -> SinkResult {
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        self.post(
            "runs/log-batch",
            &json!({ "run_id": self.run_id, "params": params }),
        )
        .map(drop)
    }

    fn scalar(&mut self, tag: &str, at: Moment, value: f64) -> SinkResult {
        if !value.is_finite() {
            // MLflow stores NaN but not infinities; neither helps a chart.
            return Err(SinkError(format!(
                "{tag} = {value} at step {} not sent",
                at.step
            )));
        }
        self.pending.push(json!({
            "key": tag,
            "value": value,
            "timestamp": millis(),
            "step": at.step,
        }));
        if self.pending.len() >= METRICS_PER_BATCH {
            self.send_pending()?;
        }
        Ok(())
    }

    fn image(&mut self, tag: &str, at: Moment, image: &RgbImage) -> SinkResult {
        let Some(root) = &self.artifact_root else {
            return Err(SinkError(
                "the server does not proxy artifacts (start it with --serve-artifacts)".into(),
            ));
        };
        let url = format!("{}/{root}/{tag}/step_{:08}.png", self.base, at.step);
        let response = self
            .agent
            .put(&url)
            .header("Content-Type", "image/png")
            .send(&png_bytes(image)[..])
            .map_err(|e| error(&url, e))?;
        if !response.status().is_success() {
            return Err(error(&url, response.status()));
        }
        Ok(())
    }

    /// MLflow has no histograms: the distribution is left to TensorBoard and the
    /// timeline; its mean and spread arrive as scalars from the feature monitor.
    fn histogram(&mut self, _tag: &str, _at: Moment, _h: &Histogram) -> SinkResult {
        Ok(())
    }

    fn flush(&mut self, _at: Moment) -> SinkResult {
        self.send_pending()
    }

    fn finish(&mut self) -> SinkResult {
        self.send_pending()?;
        self.post(
            "runs/update",
            &json!({ "run_id": self.run_id, "status": "FINISHED", "end_time": millis() }),
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_an_error_that_names_it() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = Mlflow::start("http://127.0.0.1:1", "e", "r").err().unwrap();
        assert!(err.0.contains("127.0.0.1:1"), "{err}");
    }
}
