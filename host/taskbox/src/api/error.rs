//! One error type for every handler: a status code, a stable code and a message, sent as
//! `{"error": {"code": ..., "message": ...}}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use taskbox_core::registry::RegistryError;

/// When a client told that Redis is full may try again, in seconds.
const OUT_OF_MEMORY_RETRY_SECS: u64 = 5;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

/// The body of every error answer.
// Deserialize too: the CLI reads it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `invalid_body`, `missing_import`, ...
    pub(crate) code: String,
    /// For people: names the field, import or limit concerned.
    pub(crate) message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Its status code.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, for people.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub(crate) fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// A 503 the caller can wait out: try again after `retry_after_secs`.
    pub(crate) fn busy(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub(crate) fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many jobs enqueued with this token: try again in {retry_after_secs}s"),
            )
        }
    }

    /// A failure of the host itself (Redis down or full, a bug): logged, and answered
    /// without details but for a full Redis, which the caller can wait out.
    pub(crate) fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        if taskbox_core::store::is_out_of_memory(&err) {
            tracing::error!("Redis is out of memory: {err:#}");
            return Self {
                retry_after: Some(OUT_OF_MEMORY_RETRY_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis_out_of_memory",
                    "Redis has reached its maxmemory, so nothing was stored; try again later",
                )
            };
        }
        tracing::error!("API request failed: {err:#}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server could not complete the request; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match err {
            RegistryError::TooLarge { .. } => Self::too_large("module_too_large", message),
            RegistryError::Manifest(_) => Self::bad_request("invalid_manifest", message),
            RegistryError::Policy(_) => {
                Self::new(StatusCode::FORBIDDEN, "policy_exceeded", message)
            }
            RegistryError::Invalid(_) => Self::bad_request("invalid_module", message),
            RegistryError::AbiMismatch(_) => Self::bad_request("abi_mismatch", message),
            RegistryError::UnknownImport { .. } => Self::bad_request("missing_import", message),
            RegistryError::NotGranted { .. } => {
                Self::bad_request("capability_not_granted", message)
            }
            RegistryError::CompileTimeout(_) => Self::bad_request("compile_timeout", message),
            RegistryError::VersionExists { .. } => Self::conflict("version_exists", message),
            RegistryError::NotFound(_) => Self::not_found(message),
            RegistryError::InUse { .. } => Self::conflict("module_in_use", message),
            RegistryError::Redis(err) => Self::internal(err),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
            }
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("malformed_json", message),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ),
            rejection if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::too_large("body_too_large", "the request body is larger than allowed")
            }
            _ => Self::bad_request("invalid_body", message),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

/// A JSON body whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// Path parameters whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

/// Answers paths that do not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is under /v1 (see /v1/openapi.json)")
}

/// Answers methods a path does not take.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see /v1/openapi.json)",
    )
}
