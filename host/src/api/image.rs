//! An image as a response body: `GET /evidence/{id}` serves PNG, JPEG, GIF
//! or WebP, each with its own `Content-Type`, which poem-openapi's
//! [`Binary`](poem_openapi::payload::Binary) (always
//! `application/octet-stream`) cannot say. The document says `image/*`.

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};

use crate::evidence::Image;

/// The image's bytes, served with its media type.
pub struct ImageBody(pub Image);

impl Payload for ImageBody {
    const CONTENT_TYPE: &'static str = "image/*";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    }
}

impl IntoResponse for ImageBody {
    fn into_response(self) -> Response {
        Response::builder().content_type(self.0.kind.mime()).body(self.0.bytes)
    }
}
