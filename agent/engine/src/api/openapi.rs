//! The routes and the OpenAPI 3.1 document served at `/openapi.json`, built together: each
//! handler's `#[utoipa::path]` attribute and its types' `ToSchema` give its entry, and
//! `utoipa_axum::routes!` registers the same handler in the router and in the document, so a
//! route cannot be served undocumented nor documented unserved.

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::content::Content;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Ref;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::handlers as h;
use super::{ErrorBody, PUBLIC_ROUTES, Shared};

/// The parts of the document no handler carries.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "treasury agent API",
        description = "Status, intents, policies and manual triggers, root approvals waiting, \
            and Prometheus metrics of a treasury agent. Every route but /health needs \
            `Authorization: Bearer TOKEN`; errors are JSON {\"error\": \"...\"}."
    ),
    security(("bearerAuth" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Every route (without state, authentication or layers) and the document describing exactly them,
/// with `version` as the API's version.
pub fn routes_and_document(version: &str) -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(h::health))
        .routes(routes!(h::openapi))
        .routes(routes!(h::metrics))
        .routes(routes!(h::status))
        .routes(routes!(h::list_intents))
        .routes(routes!(h::show_intent))
        .routes(routes!(h::list_policies))
        .routes(routes!(h::trigger_policy))
        .routes(routes!(h::show_trigger))
        .routes(routes!(h::approvals))
        .routes(routes!(super::jobs::list_jobs))
        .routes(routes!(super::jobs::job_history))
        .routes(routes!(super::payments::export_payments))
        .split_for_parts();
    document.info.version = version.to_string();
    document_authentication(&mut document);
    (router, document)
}

/// The OpenAPI document of every route, with `version` as the API's version.
pub fn document(version: &str) -> utoipa::openapi::OpenApi {
    routes_and_document(version).1
}

/// The bearer scheme, and on each operation what the authentication middleware does with
/// [`PUBLIC_ROUTES`]: public ones need nothing, the others answer 401 without the token.
fn document_authentication(document: &mut utoipa::openapi::OpenApi) {
    let bearer = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
    document.components.get_or_insert_with(Default::default).add_security_scheme("bearerAuth", bearer);
    let unauthorized = ResponseBuilder::new()
        .description("Missing or invalid bearer token")
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build();
    for (path, item) in document.paths.paths.iter_mut() {
        let public = PUBLIC_ROUTES.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
            &mut item.query,
        ];
        let others = item.additional_operations.values_mut();
        for operation in operations.into_iter().flatten().chain(others) {
            if public {
                operation.security = Some(Vec::new());
            } else {
                operation.responses.responses.insert("401".into(), unauthorized.clone().into());
            }
        }
    }
}
