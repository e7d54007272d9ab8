//! The API key: with `SYNC_API_KEY` set, every operation but `/health` needs
//! header `X-API-Key` with that value.
//!
//! [`ApiKeyGuard`] is an extractor every protected operation takes, so the
//! OpenAPI document declares the `ApiKey` security scheme on exactly the
//! operations that check it (and Swagger UI offers "Authorize"). It is written
//! by hand rather than derived because the derived scheme always demands the
//! header, while here the key is optional: without `SYNC_API_KEY` the API is
//! open (and bound to 127.0.0.1 by default, see `config`).

use std::sync::Arc;

use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ReadError;

/// The header that carries the key.
pub const HEADER: &str = "X-API-Key";
/// The scheme's name in the OpenAPI document.
const SCHEME: &str = "ApiKey";

/// The configured key, kept only as its SHA-256 digest: comparing digests
/// in constant time reveals neither the key nor its length through timing.
#[derive(Clone)]
pub struct ApiKey(Arc<[u8; 32]>);

impl ApiKey {
    pub fn new(key: &str) -> ApiKey {
        ApiKey(Arc::new(Sha256::digest(key.as_bytes()).into()))
    }

    fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        bool::from(self.0.as_slice().ct_eq(given.as_slice()))
    }
}

/// Proof that the request may use a protected operation.
pub struct ApiKeyGuard;

impl<'a> ApiExtractor<'a> for ApiKeyGuard {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some("Required on every operation but /health when the server has SYNC_API_KEY set."),
                name: Some(HEADER),
                key_in: Some("header"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let Some(expected) = req.data::<Arc<ApiState>>().and_then(|s| s.api_key.as_ref()) else {
            return Ok(ApiKeyGuard);
        };
        match req.headers().get(HEADER) {
            None => Err(ReadError::unauthorized(format!("this server requires header {HEADER}")).into()),
            Some(given) if expected.matches(given.as_bytes()) => Ok(ApiKeyGuard),
            Some(_) => Err(ReadError::unauthorized(format!("header {HEADER} does not hold the right key")).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_matches() {
        let key = ApiKey::new("s3cret");
        assert!(key.matches(b"s3cret"));
        assert!(!key.matches(b"s3cret "));
        assert!(!key.matches(b""));
    }
}
