//! A small client for the REST API.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub async fn login(base: &str, client_id: &str, secret: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .with_context(|| format!("is the api running at {base}? (`just up`)"))?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "login as {client_id} failed: {body}");
        let token = body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned();
        Ok(Self {
            base: base.to_owned(),
            token,
            http,
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST {path}: {status}: {body}");
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "GET {path}: {status}: {body}");
        Ok(body)
    }

    /// Uploads a CSV as `POST /v1/files` and a PUT to its link describe, then waits
    /// until the platform imported it; fails if it was rejected.
    pub async fn upload_file(
        &self,
        kind: &str,
        name: &str,
        organization_id: Option<&str>,
        csv: String,
    ) -> anyhow::Result<Value> {
        let file = self
            .post(
                "/v1/files",
                &json!({"kind": kind, "name": name, "organization_id": organization_id}),
            )
            .await?;
        let url = file["upload_url"].as_str().context("no upload_url")?;
        let put = self.http.put(url).body(csv).send().await?;
        anyhow::ensure!(
            put.status().is_success(),
            "PUT {name} to the inbound bucket: {}",
            put.status()
        );
        let id = file["id"].as_str().context("no file id")?;
        let started = std::time::Instant::now();
        loop {
            let file = self.get(&format!("/v1/files/{id}")).await?;
            match file["status"].as_str() {
                Some("imported") => return Ok(file),
                Some("rejected") => anyhow::bail!(
                    "{name} was rejected: {} (report: {})",
                    file["reason"],
                    file["error_report_url"]
                ),
                _ => {}
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "{name} was not imported within 2 minutes (status {}); are the bucket-watcher and the worker running?",
                file["status"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Every item of a paginated list.
    pub async fn all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{}{path}{sep}limit=500&cursor={c}", self.base),
                None => format!("{}{path}{sep}limit=500", self.base),
            };
            let response = self.http.get(url).bearer_auth(&self.token).send().await?;
            let status = response.status();
            let page: Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "GET {path}: {status}: {page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The organization with this name, created if missing.
    pub async fn organization(&self, name: &str, kind: &str) -> anyhow::Result<Value> {
        let existing = self.all("/v1/organizations").await?;
        if let Some(org) = existing.into_iter().find(|o| o["name"] == name) {
            return Ok(org);
        }
        self.post("/v1/organizations", &json!({"name": name, "kind": kind}))
            .await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    pub organization: String,
    pub organization_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub roles: Vec<String>,
}

/// Secrets are shown once, so the seed keeps what it was given between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    pub clients: Vec<Client>,
}

impl Credentials {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()))?),
            Err(_) => Ok(Self::default()),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// The aggregator's client from an earlier run, or a new one.
    pub async fn client_for(
        &mut self,
        admin: &Api,
        org: &Value,
        slug: &str,
    ) -> anyhow::Result<Client> {
        let org_id = org["id"].as_str().context("organization id")?.to_owned();
        let name = org["name"].as_str().unwrap_or_default();
        // A client of an organization of that name in an earlier database is stale.
        self.clients
            .retain(|c| c.organization != name || c.organization_id == org_id);
        if let Some(c) = self.clients.iter().find(|c| c.organization_id == org_id) {
            return Ok(c.clone());
        }
        let created = admin
            .post(
                &format!("/v1/organizations/{org_id}/clients"),
                &json!({"name": format!("{slug} integration"), "roles": ["aggregator"]}),
            )
            .await?;
        let client = Client {
            organization: org["name"].as_str().unwrap_or_default().to_owned(),
            organization_id: org_id,
            client_id: created["id"].as_str().context("client id")?.to_owned(),
            client_secret: created["client_secret"]
                .as_str()
                .context("client secret")?
                .to_owned(),
            roles: vec!["aggregator".to_owned()],
        };
        self.clients.push(client.clone());
        Ok(client)
    }
}
