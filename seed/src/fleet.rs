//! Which gateways the simulator plays, with their secrets and DERs.
//!
//! Secrets are shown once by the API, so the fleet is kept in a file
//! (`seed/out/gateways.json` by default). Without one, the simulator finds the
//! seeded aggregators' gateways through the API and rotates their secrets.

use std::{collections::HashMap, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Api, Credentials};

/// The DER types the seed and the simulator cycle through.
pub const DER_TYPES: [&str; 6] = [
    "battery",
    "thermostat",
    "ev_charger",
    "solar_pv",
    "water_heater",
    "ci_load",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimDer {
    pub id: Uuid,
    pub der_type: String,
    pub nameplate_kw: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySpec {
    pub id: Uuid,
    pub secret: String,
    pub ders: Vec<SimDer>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fleet {
    pub gateways: Vec<GatewaySpec>,
}

impl Fleet {
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    pub fn ders(&self) -> usize {
        self.gateways.iter().map(|g| g.ders.len()).sum()
    }

    /// The seeded aggregators' gateways that control DERs, with fresh secrets.
    pub async fn discover(api_base: &str, path: &Path) -> anyhow::Result<Self> {
        let credentials = Credentials::load(path)?;
        anyhow::ensure!(
            !credentials.clients.is_empty(),
            "no aggregator credentials in {}; run `just seed-database` first",
            path.display()
        );
        let mut fleet = Fleet::default();
        for client in &credentials.clients {
            let api = Api::login(api_base, &client.client_id, &client.client_secret).await?;
            let mut by_gateway: HashMap<Uuid, Vec<SimDer>> = HashMap::new();
            for der in api.all("/v1/ders?status=active").await? {
                if let Some(gateway) = der["gateway_id"].as_str().and_then(|g| g.parse().ok()) {
                    by_gateway.entry(gateway).or_default().push(sim_der(&der)?);
                }
            }
            let before = fleet.gateways.len();
            let mut gateways: Vec<_> = by_gateway.into_iter().collect();
            gateways.sort_by_key(|(id, _)| *id);
            for (id, ders) in gateways {
                let rotated = api
                    .post(&format!("/v1/gateways/{id}/rotate-secret"), &json!({}))
                    .await?;
                fleet.gateways.push(GatewaySpec {
                    id,
                    secret: rotated["secret"].as_str().context("secret")?.to_owned(),
                    ders,
                });
            }
            eprintln!(
                "gateway-sim: {}: {} gateways",
                client.organization,
                fleet.gateways.len() - before
            );
        }
        Ok(fleet)
    }

    /// A fleet of its own for benchmarks: `gateways` new gateways with
    /// `ders_per_gateway` DERs each, registered in bulk in the first aggregator's
    /// organization.
    pub async fn provision(
        api_base: &str,
        credentials: &Path,
        gateways: usize,
        ders_per_gateway: usize,
        label: &str,
    ) -> anyhow::Result<Self> {
        let credentials = Credentials::load(credentials)?;
        let client = credentials
            .clients
            .first()
            .context("no aggregator credentials; run `just seed-database` first")?;
        let api = Api::login(api_base, &client.client_id, &client.client_secret).await?;
        let mut fleet = Fleet::default();
        for g in 0..gateways {
            let created = api
                .post(
                    "/v1/gateways",
                    &json!({"name": format!("{label}-gw-{g:04}"), "firmware": "sim-1.0"}),
                )
                .await?;
            let id: Uuid = created["id"].as_str().context("gateway id")?.parse()?;
            let secret = created["secret"].as_str().context("secret")?.to_owned();
            let mut ders = Vec::with_capacity(ders_per_gateway);
            for chunk in (0..ders_per_gateway).collect::<Vec<_>>().chunks(1000) {
                let items: Vec<Value> = chunk
                    .iter()
                    .map(|i| {
                        json!({
                            "der_type": DER_TYPES[i % DER_TYPES.len()],
                            "nameplate_kw": 5.0 + (i % 7) as f64,
                            "gateway_id": id,
                            "external_id": format!("{label}-{g:04}-{i:05}"),
                            "location": {"feeder": format!("{label}-feeder-{:02}", g % 10)},
                        })
                    })
                    .collect();
                let created = api.post("/v1/ders/bulk", &json!({"items": items})).await?;
                for der in created["items"].as_array().context("bulk items")? {
                    ders.push(sim_der(der)?);
                }
            }
            fleet.gateways.push(GatewaySpec { id, secret, ders });
            if (g + 1) % 10 == 0 || g + 1 == gateways {
                eprintln!("gateway-sim: provisioned {}/{gateways} gateways", g + 1);
            }
        }
        Ok(fleet)
    }
}

fn sim_der(der: &Value) -> anyhow::Result<SimDer> {
    Ok(SimDer {
        id: der["id"].as_str().context("der id")?.parse()?,
        der_type: der["der_type"].as_str().unwrap_or("ci_load").to_owned(),
        nameplate_kw: der["nameplate_kw"].as_f64().unwrap_or(5.0),
    })
}
