//! What an object's key says about it. Pure.

use uuid::Uuid;

/// File kinds, as the key's second segment names them.
pub const KINDS: [&str; 3] = ["ders", "enrollments", "meter_data"];

/// Where a key puts an object: `<organization id>/<kind>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    pub organization_id: Uuid,
    pub kind: &'static str,
    pub name: &'a str,
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not `<organization id>/<kind>/<file name>`")]
    Shape,
    #[error("`{0}` is not an organization id")]
    Organization(String),
    #[error("`{0}` is not a file kind (ders, enrollments or meter_data)")]
    Kind(String),
}

/// Whether a key is a folder marker (as consoles create), which is not a file.
pub fn is_folder(key: &str) -> bool {
    key.ends_with('/')
}

pub fn placement(key: &str) -> Result<Placement<'_>, KeyError> {
    let mut parts = key.splitn(3, '/');
    let (Some(org), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Shape);
    };
    if name.is_empty() {
        return Err(KeyError::Shape);
    }
    let organization_id = Uuid::parse_str(org).map_err(|_| KeyError::Organization(clip(org)))?;
    let kind = KINDS
        .into_iter()
        .find(|k| *k == kind)
        .ok_or_else(|| KeyError::Kind(clip(kind)))?;
    Ok(Placement {
        organization_id,
        kind,
        name,
    })
}

/// The file id an api upload put in the key (`<id>.csv`), if it is one.
pub fn upload_id(name: &str) -> Option<Uuid> {
    name.strip_suffix(".csv")
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0195f3a0-0000-7000-8000-000000000001";

    #[test]
    fn a_key_names_organization_kind_and_file() {
        let key = format!("{ORG}/meter_data/2026/07/mdm export.csv");
        let p = placement(&key).expect("valid");
        assert_eq!(p.organization_id.to_string(), ORG);
        assert_eq!(p.kind, "meter_data");
        assert_eq!(p.name, "2026/07/mdm export.csv");
    }

    #[test]
    fn keys_outside_the_layout_are_refused_with_the_reason() {
        assert_eq!(placement("loose.csv"), Err(KeyError::Shape));
        assert_eq!(placement(&format!("{ORG}/ders/")), Err(KeyError::Shape));
        assert_eq!(
            placement("acme/ders/a.csv"),
            Err(KeyError::Organization("acme".into()))
        );
        assert_eq!(
            placement(&format!("{ORG}/invoices/a.csv")),
            Err(KeyError::Kind("invoices".into()))
        );
    }

    #[test]
    fn api_uploads_carry_their_file_id() {
        let id = "0195f3a0-0000-7000-8000-0000000000aa";
        assert_eq!(
            upload_id(&format!("{id}.csv")).map(|u| u.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(upload_id("export.csv"), None);
        assert!(is_folder(&format!("{ORG}/ders/")));
    }
}
