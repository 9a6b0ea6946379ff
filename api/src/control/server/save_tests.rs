//! The save and migrate routes: bodies checked, answers passed through.

use super::super::{
    ApiError, Backend, ConsoleInfo, CreateRequest, DomainInfo, DomainOp, MigrateRequest, SaveInfo,
    SaveRequest,
};
use super::route;

/// A backend with no domain but `web`, whose save/migrate echo the request.
struct Fake;

fn saved(path: &str) -> SaveInfo {
    SaveInfo {
        path: path.into(),
        bytes: 1,
        pages: 2,
        suspend_ms: 3,
        write_ms: 4,
        rounds: Vec::new(),
        downtime_ms: None,
    }
}

impl Backend for Fake {
    fn list(&self) -> Vec<DomainInfo> {
        Vec::new()
    }
    fn create(&self, _: CreateRequest) -> Result<DomainInfo, ApiError> {
        Err(ApiError::Conflict("no".into()))
    }
    fn info(&self, dom: &str) -> Result<DomainInfo, ApiError> {
        Err(ApiError::unknown_domain(dom))
    }
    fn op(&self, dom: &str, _: DomainOp) -> Result<DomainInfo, ApiError> {
        Err(ApiError::unknown_domain(dom))
    }
    fn console(&self, dom: &str) -> Result<ConsoleInfo, ApiError> {
        Err(ApiError::unknown_domain(dom))
    }
    fn save(&self, dom: &str, req: &SaveRequest) -> Result<SaveInfo, ApiError> {
        match dom {
            "web" => Ok(saved(&req.path)),
            _ => Err(ApiError::unknown_domain(dom)),
        }
    }
    fn migrate(&self, dom: &str, req: &MigrateRequest) -> Result<SaveInfo, ApiError> {
        match dom {
            "web" => Ok(SaveInfo {
                rounds: vec![10, 2],
                downtime_ms: Some(5),
                ..saved(&req.socket)
            }),
            _ => Err(ApiError::unknown_domain(dom)),
        }
    }
}

#[test]
fn save_and_migrate_routes() {
    let (st, body) = route(&Fake, "POST", "/v1/domains/web/save", br#"{"path":"/x"}"#);
    assert_eq!(st, 200, "{body}");
    let i: SaveInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(i, saved("/x"));
    assert!(!body.contains("rounds"), "a save has no rounds: {body}");
    let (st, body) = route(
        &Fake,
        "POST",
        "/v1/domains/web/migrate",
        br#"{"socket":"/s"}"#,
    );
    assert_eq!(st, 200, "{body}");
    let i: SaveInfo = serde_json::from_str(&body).unwrap();
    assert_eq!((i.rounds, i.downtime_ms), (vec![10, 2], Some(5)));
    // Unknown domain, malformed or extra fields, wrong method.
    assert_eq!(
        route(&Fake, "POST", "/v1/domains/db/save", br#"{"path":"/x"}"#).0,
        404
    );
    assert_eq!(route(&Fake, "POST", "/v1/domains/web/save", b"{}").0, 400);
    assert_eq!(
        route(
            &Fake,
            "POST",
            "/v1/domains/web/save",
            br#"{"path":"/x","y":1}"#
        )
        .0,
        400
    );
    assert_eq!(route(&Fake, "POST", "/v1/domains/web/migrate", b"[").0, 400);
    assert_eq!(route(&Fake, "GET", "/v1/domains/web/save", b"").0, 405);
    assert_eq!(route(&Fake, "GET", "/v1/domains/web/migrate", b"").0, 405);
}
