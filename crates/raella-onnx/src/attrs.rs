//! A node's attributes, with typed getters whose errors name the attribute.

use crate::proto::{AttributeProto, attribute_proto::AttributeType};
use crate::tensor::Tensor;
use crate::{OpError, import::tensor_from_proto};

/// The attributes of one node.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    list: &'a [AttributeProto],
}

impl<'a> Attrs<'a> {
    /// Wraps a node's attribute list.
    #[must_use]
    pub fn new(list: &'a [AttributeProto]) -> Self {
        Self { list }
    }

    /// The attribute protos (for kernels that parse them at run time).
    #[must_use]
    pub fn list(&self) -> &'a [AttributeProto] {
        self.list
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.list.iter().find(|a| a.name() == name)
    }

    /// True when the attribute is present.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names of every attribute (for messages).
    #[must_use]
    pub fn names(&self) -> Vec<&'a str> {
        self.list.iter().map(AttributeProto::name).collect()
    }

    fn kind(a: &AttributeProto) -> AttributeType {
        AttributeType::try_from(a.r#type.unwrap_or(0)).unwrap_or(AttributeType::Undefined)
    }

    /// An integer attribute.
    ///
    /// # Errors
    /// Present with another type.
    pub fn int(&self, name: &str) -> Result<Option<i64>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if Self::kind(a) == AttributeType::Int || a.i.is_some() => Ok(Some(a.i())),
            Some(_) => Err(OpError(format!("attribute `{name}` is not an integer"))),
        }
    }

    /// An integer attribute with a default.
    ///
    /// # Errors
    /// Present with another type.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, OpError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A float attribute.
    ///
    /// # Errors
    /// Present with another type, or not finite.
    pub fn float(&self, name: &str) -> Result<Option<f32>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if Self::kind(a) == AttributeType::Float || a.f.is_some() => Ok(Some(a.f())),
            Some(_) => Err(OpError(format!("attribute `{name}` is not a float"))),
        }
    }

    /// A float attribute with a default.
    ///
    /// # Errors
    /// Present with another type.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, OpError> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// A list of integers.
    ///
    /// # Errors
    /// Present with another type.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a)
                if matches!(
                    Self::kind(a),
                    AttributeType::Ints | AttributeType::Undefined
                ) =>
            {
                Ok(Some(a.ints.clone()))
            }
            Some(_) => Err(OpError(format!(
                "attribute `{name}` is not a list of integers"
            ))),
        }
    }

    /// A list of floats.
    ///
    /// # Errors
    /// Present with another type.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a)
                if matches!(
                    Self::kind(a),
                    AttributeType::Floats | AttributeType::Undefined
                ) =>
            {
                Ok(Some(a.floats.clone()))
            }
            Some(_) => Err(OpError(format!(
                "attribute `{name}` is not a list of floats"
            ))),
        }
    }

    /// A string attribute.
    ///
    /// # Errors
    /// Present with another type or not UTF-8.
    pub fn string(&self, name: &str) -> Result<Option<String>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if Self::kind(a) == AttributeType::String || a.s.is_some() => {
                String::from_utf8(a.s().to_vec())
                    .map(Some)
                    .map_err(|_| OpError(format!("attribute `{name}` is not UTF-8")))
            }
            Some(_) => Err(OpError(format!("attribute `{name}` is not a string"))),
        }
    }

    /// A string attribute with a default.
    ///
    /// # Errors
    /// As [`Self::string`].
    pub fn string_or(&self, name: &str, default: &str) -> Result<String, OpError> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// A tensor attribute.
    ///
    /// # Errors
    /// Present with another type, or a malformed tensor.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, OpError> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => tensor_from_proto(t)
                    .map(Some)
                    .map_err(|e| OpError(format!("attribute `{name}`: {e}"))),
                None => Err(OpError(format!("attribute `{name}` is not a tensor"))),
            },
        }
    }

    /// True when the node has a graph-valued attribute (control flow).
    #[must_use]
    pub fn has_subgraph(&self) -> bool {
        self.list
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }
}
