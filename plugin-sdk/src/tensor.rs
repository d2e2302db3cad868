//! [`Tensor`]: a shape plus typed, row-major elements, checked on construction and on access.
//!
//! Constructors check that the element count matches the shape and accessors check the dtype,
//! so data from a client never panics a plugin: both return [`TensorError`], whose message says
//! what to fix.

use std::fmt;

/// Element type of a tensor; one case per `dtype` case of the plugin contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 half precision (16 bits).
    F16,
    /// bfloat16: the top 16 bits of an `f32`.
    BF16,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean, one byte per element.
    Bool,
    /// Byte string (TensorFlow `DT_STRING`): any bytes, not necessarily UTF-8.
    Str,
}

impl DType {
    /// Every dtype, in the contract's order.
    pub const ALL: [DType; 14] = [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::Str,
    ];

    /// The short lower-case name: `"f32"`, `"i64"`, `"bool"`, `"str"` and so on.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
            DType::Str => "str",
        }
    }

    /// Parses [`DType::name`]; also accepts the contract's `"boolean"` and `"string"`.
    pub fn from_name(name: &str) -> Option<DType> {
        match name {
            "boolean" => Some(DType::Bool),
            "string" => Some(DType::Str),
            _ => DType::ALL.into_iter().find(|d| d.name() == name),
        }
    }

    /// Bytes per element on the wire; `None` for `Str`, whose elements are byte strings.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::Str => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor's elements, typed. `F16` and `BF16` hold the raw 16-bit patterns.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Half floats as raw bit patterns.
    F16(Vec<u16>),
    /// bfloat16 values as raw bit patterns.
    BF16(Vec<u16>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `u8` elements.
    U8(Vec<u8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// One byte string per element.
    Str(Vec<Vec<u8>>),
}

impl Values {
    /// The dtype these values have.
    pub fn dtype(&self) -> DType {
        match self {
            Values::F16(_) => DType::F16,
            Values::BF16(_) => DType::BF16,
            Values::F32(_) => DType::F32,
            Values::F64(_) => DType::F64,
            Values::I8(_) => DType::I8,
            Values::I16(_) => DType::I16,
            Values::I32(_) => DType::I32,
            Values::I64(_) => DType::I64,
            Values::U8(_) => DType::U8,
            Values::U16(_) => DType::U16,
            Values::U32(_) => DType::U32,
            Values::U64(_) => DType::U64,
            Values::Bool(_) => DType::Bool,
            Values::Str(_) => DType::Str,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F16(v) | Values::BF16(v) | Values::U16(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::I16(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::U64(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a tensor could not be built or read as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorError {
    /// A dimension was negative.
    NegativeDim {
        /// The shape as given.
        shape: Vec<i64>,
    },
    /// The dimensions multiply to more elements than fit in memory.
    TooLarge {
        /// The shape as given.
        shape: Vec<i64>,
    },
    /// The number of values does not match the shape.
    ElementCount {
        /// The tensor's element type.
        dtype: DType,
        /// The shape as given.
        shape: Vec<i64>,
        /// Elements the shape asks for.
        expected: usize,
        /// Elements supplied.
        given: usize,
    },
    /// An accessor for one dtype was called on a tensor of another.
    WrongDType {
        /// The dtype the accessor reads.
        wanted: DType,
        /// The tensor's dtype.
        actual: DType,
    },
    /// The gateway sent a tensor whose bytes do not match its dtype and shape.
    Malformed(String),
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::NegativeDim { shape } => {
                write!(f, "shape {shape:?} has a negative dimension")
            }
            TensorError::TooLarge { shape } => write!(f, "shape {shape:?} has too many elements"),
            TensorError::ElementCount {
                dtype,
                shape,
                expected,
                given,
            } => write!(
                f,
                "shape {shape:?} holds {expected} {dtype} element{} but {given} {} given",
                if *expected == 1 { "" } else { "s" },
                if *given == 1 { "was" } else { "were" },
            ),
            TensorError::WrongDType { wanted, actual } => {
                write!(f, "expected a {wanted} tensor, found {actual}")
            }
            TensorError::Malformed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for TensorError {}

/// Number of elements a shape holds, checking that no dimension is negative.
pub(crate) fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| TensorError::NegativeDim {
            shape: shape.to_vec(),
        })?;
        n.checked_mul(d).ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
        })
    })
}

/// A dense tensor: a shape (`i64` dimensions, as in TensorFlow) and row-major elements.
///
/// ```
/// use infergate_sdk::{DType, Tensor};
///
/// let t = Tensor::f32([2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
/// assert_eq!(t.shape(), &[2, 2]);
/// assert_eq!(t.dtype(), DType::F32);
/// assert_eq!(t.rows(), 2);
/// assert_eq!(t.as_f32()?, &[1.0, 2.0, 3.0, 4.0]);
/// assert!(t.as_i64().is_err());
/// assert!(Tensor::f32([2, 2], vec![1.0]).is_err());
/// # Ok::<(), infergate_sdk::TensorError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<i64>,
    values: Values,
}

/// One typed constructor and one typed accessor per dtype.
macro_rules! typed {
    ($($ctor:ident, $get:ident, $variant:ident, $elem:ty, $what:literal;)*) => {
        $(
            #[doc = concat!(
                "A ", $what, " tensor; errors if `values` does not hold exactly as many ",
                "elements as `shape`."
            )]
            pub fn $ctor(
                shape: impl Into<Vec<i64>>,
                values: impl Into<Vec<$elem>>,
            ) -> Result<Tensor, TensorError> {
                Tensor::new(shape, Values::$variant(values.into()))
            }

            #[doc = concat!("The elements of a ", $what, " tensor; errors for any other dtype.")]
            pub fn $get(&self) -> Result<&[$elem], TensorError> {
                match &self.values {
                    Values::$variant(v) => Ok(v),
                    other => Err(TensorError::WrongDType {
                        wanted: DType::$variant,
                        actual: other.dtype(),
                    }),
                }
            }
        )*
    };
}

impl Tensor {
    /// A tensor from a shape and values of any dtype; errors if the counts disagree or a
    /// dimension is negative.
    pub fn new(shape: impl Into<Vec<i64>>, values: Values) -> Result<Tensor, TensorError> {
        let shape = shape.into();
        let expected = element_count(&shape)?;
        if values.len() != expected {
            return Err(TensorError::ElementCount {
                dtype: values.dtype(),
                shape,
                expected,
                given: values.len(),
            });
        }
        Ok(Tensor { shape, values })
    }

    typed! {
        f32, as_f32, F32, f32, "`f32`";
        f64, as_f64, F64, f64, "`f64`";
        i8, as_i8, I8, i8, "`i8`";
        i16, as_i16, I16, i16, "`i16`";
        i32, as_i32, I32, i32, "`i32`";
        i64, as_i64, I64, i64, "`i64`";
        u8, as_u8, U8, u8, "`u8`";
        u16, as_u16, U16, u16, "`u16`";
        u32, as_u32, U32, u32, "`u32`";
        u64, as_u64, U64, u64, "`u64`";
        bool, as_bool, Bool, bool, "`bool`";
        f16_bits, as_f16_bits, F16, u16, "`f16` (raw IEEE half-precision bit patterns)";
        bf16_bits, as_bf16_bits, BF16, u16, "`bf16` (raw bfloat16 bit patterns)";
    }

    /// A string tensor: one byte string per element (`&str`, `String`, `Vec<u8>`, `&[u8]`…).
    pub fn strings<S: AsRef<[u8]>>(
        shape: impl Into<Vec<i64>>,
        values: impl IntoIterator<Item = S>,
    ) -> Result<Tensor, TensorError> {
        let values = values.into_iter().map(|s| s.as_ref().to_vec()).collect();
        Tensor::new(shape, Values::Str(values))
    }

    /// The elements of a string tensor; errors for any other dtype.
    pub fn as_strings(&self) -> Result<&[Vec<u8>], TensorError> {
        match &self.values {
            Values::Str(v) => Ok(v),
            other => Err(TensorError::WrongDType {
                wanted: DType::Str,
                actual: other.dtype(),
            }),
        }
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.values.dtype()
    }

    /// The size of dim 0, the batch dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        // Dimensions were checked non-negative on construction.
        self.shape.first().map_or(1, |&d| d as usize)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The typed elements.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Takes the tensor apart into its shape and elements.
    pub fn into_parts(self) -> (Vec<i64>, Values) {
        (self.shape, self.values)
    }

    /// The same elements under another shape holding as many, as numpy's `reshape`
    /// (`[28, 28, 1]` → `[1, 28, 28, 1]`, say); another element count is an error.
    pub fn reshape(self, shape: impl Into<Vec<i64>>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_the_element_count() {
        let t = Tensor::f32([1, 3], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            (t.shape(), t.dtype(), t.len(), t.rows()),
            (&[1i64, 3][..], DType::F32, 3, 1)
        );

        let err = Tensor::i64([2, 2], vec![1, 2, 3]).unwrap_err();
        assert_eq!(
            err,
            TensorError::ElementCount {
                dtype: DType::I64,
                shape: vec![2, 2],
                expected: 4,
                given: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "shape [2, 2] holds 4 i64 elements but 3 were given"
        );
        assert_eq!(
            Tensor::u8([1], vec![1, 2]).unwrap_err().to_string(),
            "shape [1] holds 1 u8 element but 2 were given"
        );
    }

    #[test]
    fn negative_and_overflowing_shapes_are_errors() {
        assert_eq!(
            Tensor::f32([1, -1], vec![]).unwrap_err(),
            TensorError::NegativeDim { shape: vec![1, -1] }
        );
        assert!(matches!(
            Tensor::u8([i64::MAX, i64::MAX], vec![]).unwrap_err(),
            TensorError::TooLarge { .. }
        ));
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let scalar = Tensor::f64(Vec::new(), vec![2.5]).unwrap();
        assert_eq!((scalar.rows(), scalar.len()), (1, 1));
        let empty = Tensor::i32([0, 4], Vec::<i32>::new()).unwrap();
        assert_eq!((empty.rows(), empty.len(), empty.is_empty()), (0, 0, true));
    }

    #[test]
    fn accessors_check_the_dtype() {
        let t = Tensor::i32([2], vec![7, 8]).unwrap();
        assert_eq!(t.as_i32().unwrap(), &[7, 8]);
        let err = t.as_f32().unwrap_err();
        assert_eq!(
            err,
            TensorError::WrongDType {
                wanted: DType::F32,
                actual: DType::I32
            }
        );
        assert_eq!(err.to_string(), "expected a f32 tensor, found i32");
        assert!(t.as_strings().is_err());
    }

    #[test]
    fn every_typed_constructor_round_trips() {
        assert_eq!(
            Tensor::f64([1], vec![1.5]).unwrap().as_f64().unwrap(),
            &[1.5]
        );
        assert_eq!(Tensor::i8([1], vec![-1]).unwrap().as_i8().unwrap(), &[-1]);
        assert_eq!(Tensor::i16([1], vec![-2]).unwrap().as_i16().unwrap(), &[-2]);
        assert_eq!(Tensor::i64([1], vec![-3]).unwrap().as_i64().unwrap(), &[-3]);
        assert_eq!(Tensor::u8([1], vec![4]).unwrap().as_u8().unwrap(), &[4]);
        assert_eq!(Tensor::u16([1], vec![5]).unwrap().as_u16().unwrap(), &[5]);
        assert_eq!(Tensor::u32([1], vec![6]).unwrap().as_u32().unwrap(), &[6]);
        assert_eq!(Tensor::u64([1], vec![7]).unwrap().as_u64().unwrap(), &[7]);
        assert_eq!(
            Tensor::bool([2], vec![true, false])
                .unwrap()
                .as_bool()
                .unwrap(),
            &[true, false]
        );
        assert_eq!(
            Tensor::f16_bits([1], vec![0x3c00])
                .unwrap()
                .as_f16_bits()
                .unwrap(),
            &[0x3c00]
        );
        assert_eq!(
            Tensor::bf16_bits([1], vec![0x3f80]).unwrap().dtype(),
            DType::BF16
        );
    }

    #[test]
    fn string_tensors_take_any_byte_strings() {
        let from_strs = Tensor::strings([2], ["a", "bc"]).unwrap();
        let from_bytes = Tensor::strings([2], vec![b"a".to_vec(), b"bc".to_vec()]).unwrap();
        assert_eq!(from_strs, from_bytes);
        assert_eq!(
            from_strs.as_strings().unwrap(),
            &[b"a".to_vec(), b"bc".to_vec()]
        );
        assert!(Tensor::strings([3], ["a"]).is_err());
    }

    #[test]
    fn dtype_names_parse_back() {
        for dtype in DType::ALL {
            assert_eq!(DType::from_name(dtype.name()), Some(dtype));
        }
        assert_eq!(DType::from_name("boolean"), Some(DType::Bool));
        assert_eq!(DType::from_name("string"), Some(DType::Str));
        assert_eq!(DType::from_name("float"), None);
    }
}
