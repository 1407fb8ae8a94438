//! The stand-in for a plugin function an executor could not make.
//!
//! Ballista reports a task that an executor refuses to decode only as "rejected", without the
//! reason. So an executor decodes such a function into this stand-in, and the task fails when
//! it runs, with the loader's message and the executor's name, which Ballista passes on to the
//! client.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// A function named like the plugin function that could not be made, failing with `message`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UnavailableFunction {
    name: String,
    message: String,
    signature: Signature,
}

impl UnavailableFunction {
    /// Stands for `name`, which could not be made for the reason in `message`.
    pub fn new(name: &str, message: String) -> Self {
        Self {
            name: name.to_string(),
            message,
            signature: Signature::variadic_any(Volatility::Volatile),
        }
    }

    /// The function as a plan calls it.
    pub fn into_udf(self) -> ScalarUDF {
        AsyncScalarUDF::new(Arc::new(self)).into_scalar_udf()
    }
}

impl ScalarUDFImpl for UnavailableFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{}", self.message)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}", self.message)
    }
}

/// Plugin functions are asynchronous: their plans evaluate them in an async stage, which
/// takes only asynchronous functions.
#[async_trait]
impl AsyncScalarUDFImpl for UnavailableFunction {
    async fn invoke_async_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}", self.message)
    }
}
