//! OpenAPI schemas of the types whose JSON is a string with a format of its own: addresses,
//! 32-byte hashes, versions, base-unit amounts, model ids, tensors and dtypes. The HTTP API's
//! spec (`/openapi.json`) names them as components, so a reader sees `Address` rather than
//! "string" wherever one is expected.

use std::borrow::Cow;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::AdditionalProperties};
use utoipa::{PartialSchema, ToSchema};

use crate::{DType, ModelId, Tensor};

fn string(pattern: Option<&str>, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .description(Some(description))
        .examples([serde_json::Value::String(example.into())])
        .into()
}

macro_rules! string_schema {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $pattern:expr, $description:literal, $example:literal) => {
        $(#[$doc])*
        pub struct $ty;
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($pattern, $description, $example)
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_schema!(
    /// An Ethereum address (`alloy_primitives::Address` in Rust).
    AddressSchema,
    "Address",
    Some("^0x[0-9a-fA-F]{40}$"),
    "An Ethereum address, 0x and 40 hex digits (any case).",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
);
string_schema!(
    /// A 32-byte hash (`B256`).
    Bytes32Schema,
    "Bytes32",
    Some("^0x[0-9a-f]{64}$"),
    "32 bytes, 0x and 64 lowercase hex digits.",
    "0x9c22ff5f21f0b81b113e63f7db6da94fedef11b2119b4088b89664fb9a3cb658"
);
string_schema!(
    /// A semantic version.
    VersionSchema,
    "Version",
    Some(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"),
    "A semantic version (semver.org).",
    "1.0.0"
);
string_schema!(
    /// An amount of the token in base units.
    AmountSchema,
    "Amount",
    Some("^[0-9]+$"),
    "An amount in base units of the token (18 decimals), as a decimal string: JSON numbers lose precision past 2^53. 1 token is 1000000000000000000.",
    "1000000000000000"
);

impl PartialSchema for ModelId {
    fn schema() -> RefOr<Schema> {
        string(Some("^sha256:[0-9a-f]{64}$"), "A model's content address: sha256: and the hex sha256 of its exact bytes.", "sha256:6a3b0c1f24ee8f3f0ef3e4d6a8e9e0b5bd3f0c5a9b52e1d8b2f7f4f2c3a1d0e9")
    }
}
impl ToSchema for ModelId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ModelId")
    }
}

impl PartialSchema for DType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(DType::ALL.map(DType::name)))
            .description(Some("Element type of a tensor."))
            .into()
    }
}
impl ToSchema for DType {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DType")
    }
}

impl PartialSchema for Tensor {
    fn schema() -> RefOr<Schema> {
        let explicit = ObjectBuilder::new()
            .property("dtype", DType::schema())
            .required("dtype")
            .property("shape", ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))))
            .required("shape")
            .property(
                "data",
                ArrayBuilder::new().description(Some("Elements in row-major order, flat or nested as numpy's tolist() writes them (nested lists must match shape). null is NaN.")),
            )
            .property("b64", ObjectBuilder::new().schema_type(Type::String).description(Some("The elements' little-endian bytes, base64 (instead of data).")))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let bare = ArrayBuilder::new().description(Some(
            "Inputs only: a bare list, nested as numpy's tolist() writes it; the shape is the nesting and the dtype the model's declared input dtype (docs/api.md).",
        ));
        OneOfBuilder::new()
            .item(explicit)
            .item(bare)
            .description(Some("A tensor: {dtype, shape, data} or {dtype, shape, b64}; as an input, also a bare (nested) list."))
            .into()
    }
}
impl ToSchema for Tensor {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tensor")
    }
}
