//! Image helpers (feature `image`): decode PNG/JPEG, convert to grayscale or RGB, resize, and
//! turn pixels into an NHWC tensor.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use infergate_sdk::image::{self, Channels, Image, Normalize};
//! # let png_bytes = Image::from_raw(2, 2, Channels::Gray, vec![0, 64, 128, 255])?.to_png()?;
//!
//! let img = image::decode_gray(&png_bytes)?.resize(28, 28);
//! let tensor = img.to_tensor(&Normalize::unit())?; // f32 [1, 28, 28, 1], pixel / 255
//! assert_eq!(tensor.shape(), &[1, 28, 28, 1]);
//! # Ok(()) }
//! ```
//!
//! Pixel values follow what a Python service using Pillow computes, so a model trained on
//! Pillow-decoded images sees the same numbers: grayscale uses Pillow's `convert("L")` formula
//! (ITU-R 601-2 luma, `L = (19595 R + 38470 G + 7471 B + 32768) >> 16`), and PNG decodes to
//! identical pixels. Two steps match only to within one level (of 255): JPEG decoders round
//! the inverse DCT differently from libjpeg, and the default resize filter, bilinear
//! ([`Filter::Triangle`]), is the same kernel as Pillow's `BILINEAR` (both widen it when
//! shrinking, so downscaling averages rather than skips pixels) but rounds differently.

use std::fmt;
use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageBuffer, ImageReader, RgbImage, imageops};

use crate::tensor::Tensor;

/// Why an image could not be decoded or converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError(String);

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

/// Channels per pixel: 1 (8-bit grayscale) or 3 (8-bit RGB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// One channel: luma (ITU-R BT.601 weights from colour input).
    Gray,
    /// Three channels, red, green, blue.
    Rgb,
}

impl Channels {
    /// 1 or 3.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

/// Resampling filter for [`Image::resize_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Nearest neighbour: fastest, blocky.
    Nearest,
    /// Bilinear (a triangle kernel); the default of [`Image::resize`].
    Triangle,
    /// Bicubic (Catmull-Rom).
    CatmullRom,
    /// Gaussian.
    Gaussian,
    /// Lanczos with a window of 3: sharpest, slowest.
    Lanczos3,
}

impl Filter {
    fn to_image(self) -> imageops::FilterType {
        match self {
            Filter::Nearest => imageops::FilterType::Nearest,
            Filter::Triangle => imageops::FilterType::Triangle,
            Filter::CatmullRom => imageops::FilterType::CatmullRom,
            Filter::Gaussian => imageops::FilterType::Gaussian,
            Filter::Lanczos3 => imageops::FilterType::Lanczos3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Buf {
    Gray(GrayImage),
    Rgb(RgbImage),
}

/// An 8-bit grayscale or RGB image, pixels row-major with channels interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    buf: Buf,
}

/// Decodes PNG or JPEG bytes (the format is read from the bytes, not trusted from a header)
/// to 8-bit grayscale or RGB. Alpha is dropped, as Pillow's `convert` does.
pub fn decode(bytes: &[u8], channels: Channels) -> Result<Image, ImageError> {
    let decoded = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError(e.to_string()))?
        .decode()
        .map_err(|e| ImageError(e.to_string()))?;
    let buf = match channels {
        Channels::Gray => Buf::Gray(to_gray(decoded)),
        Channels::Rgb => Buf::Rgb(decoded.into_rgb8()),
    };
    Ok(Image { buf })
}

/// [`decode`] to 8-bit grayscale.
pub fn decode_gray(bytes: &[u8]) -> Result<Image, ImageError> {
    decode(bytes, Channels::Gray)
}

/// [`decode`] to 8-bit RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<Image, ImageError> {
    decode(bytes, Channels::Rgb)
}

/// Grayscale images keep their values; color ones use Pillow's `convert("L")` luma formula.
fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(gray) => gray,
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => img.into_luma8(),
        color => {
            let rgb = color.into_rgb8();
            let (w, h) = rgb.dimensions();
            let luma = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    let l = 19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000;
                    (l >> 16) as u8
                })
                .collect();
            // The buffer holds exactly w*h pixels, so this cannot fail.
            GrayImage::from_raw(w, h, luma).unwrap_or_else(|| GrayImage::new(w, h))
        }
    }
}

impl Image {
    /// An image from raw 8-bit pixels (row-major, channels interleaved); errors if
    /// `pixels.len() != width * height * channels`.
    pub fn from_raw(
        width: u32,
        height: u32,
        channels: Channels,
        pixels: Vec<u8>,
    ) -> Result<Image, ImageError> {
        let expected = width as usize * height as usize * channels.count();
        let given = pixels.len();
        let buf = match channels {
            Channels::Gray => ImageBuffer::from_raw(width, height, pixels).map(Buf::Gray),
            Channels::Rgb => ImageBuffer::from_raw(width, height, pixels).map(Buf::Rgb),
        };
        buf.filter(|_| given == expected)
            .map(|buf| Image { buf })
            .ok_or_else(|| {
                let size = format!("{width}x{height} {channels:?}");
                ImageError(format!(
                    "a {size} image has {expected} bytes of pixels, not {given}"
                ))
            })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match &self.buf {
            Buf::Gray(b) => b.width(),
            Buf::Rgb(b) => b.width(),
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match &self.buf {
            Buf::Gray(b) => b.height(),
            Buf::Rgb(b) => b.height(),
        }
    }

    /// Grayscale or RGB.
    pub fn channels(&self) -> Channels {
        match &self.buf {
            Buf::Gray(_) => Channels::Gray,
            Buf::Rgb(_) => Channels::Rgb,
        }
    }

    /// The pixels, row-major, channels interleaved.
    pub fn pixels(&self) -> &[u8] {
        match &self.buf {
            Buf::Gray(b) => b.as_raw(),
            Buf::Rgb(b) => b.as_raw(),
        }
    }

    /// Resizes to exactly `width` x `height` (the aspect ratio is not kept) with the bilinear
    /// [`Filter::Triangle`]. An image already that size is returned untouched.
    pub fn resize(self, width: u32, height: u32) -> Image {
        self.resize_with(width, height, Filter::Triangle)
    }

    /// Resizes to exactly `width` x `height` with the given filter. An image already that size
    /// is returned untouched.
    pub fn resize_with(self, width: u32, height: u32, filter: Filter) -> Image {
        if (width, height) == (self.width(), self.height()) {
            return self;
        }
        let filter = filter.to_image();
        let buf = match &self.buf {
            Buf::Gray(b) => Buf::Gray(imageops::resize(b, width, height, filter)),
            Buf::Rgb(b) => Buf::Rgb(imageops::resize(b, width, height, filter)),
        };
        Image { buf }
    }

    /// An `f32` tensor of shape `[1, height, width, channels]` (NHWC, a batch of one), each
    /// value normalized as [`Normalize`] describes.
    pub fn to_tensor(&self, normalize: &Normalize) -> Result<Tensor, ImageError> {
        let c = self.channels().count();
        let mean = normalize.per_channel(&normalize.mean, "mean", c, 0.0)?;
        let std = normalize.per_channel(&normalize.std, "std", c, 1.0)?;
        let values: Vec<f32> = self
            .pixels()
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut v = p as f32;
                if normalize.divisor != 1.0 {
                    v /= normalize.divisor;
                }
                if !normalize.mean.is_empty() {
                    v -= mean[i % c];
                }
                if !normalize.std.is_empty() {
                    v /= std[i % c];
                }
                v
            })
            .collect();
        Tensor::f32(self.nhwc_shape(), values).map_err(|e| ImageError(e.to_string()))
    }

    /// A `u8` tensor of shape `[1, height, width, channels]` holding the raw pixels, for models
    /// that take 8-bit images.
    pub fn to_u8_tensor(&self) -> Result<Tensor, ImageError> {
        Tensor::u8(self.nhwc_shape(), self.pixels().to_vec()).map_err(|e| ImageError(e.to_string()))
    }

    /// PNG-encodes the image (useful to build test inputs).
    pub fn to_png(&self) -> Result<Vec<u8>, ImageError> {
        let mut out = Cursor::new(Vec::new());
        let written = match &self.buf {
            Buf::Gray(b) => b.write_to(&mut out, image::ImageFormat::Png),
            Buf::Rgb(b) => b.write_to(&mut out, image::ImageFormat::Png),
        };
        written.map_err(|e| ImageError(e.to_string()))?;
        Ok(out.into_inner())
    }

    fn nhwc_shape(&self) -> [i64; 4] {
        [
            1,
            self.height() as i64,
            self.width() as i64,
            self.channels().count() as i64,
        ]
    }
}

/// How [`Image::to_tensor`] turns an 8-bit pixel `p` of channel `c` into a float:
/// `((p / divisor) - mean[c]) / std[c]`, each step skipped when not set. `mean` and `std` hold
/// one value per channel, or one value for all.
///
/// Dividing (rather than multiplying by `1/255`) gives exactly what numpy's `x / 255.0` gives,
/// bit for bit, so inputs match a Python reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// Each pixel is divided by this first (1 leaves it as is).
    pub divisor: f32,
    /// Subtracted per channel after dividing (empty: nothing).
    pub mean: Vec<f32>,
    /// Divides per channel after subtracting the mean (empty: nothing).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Raw pixel values, 0.0 to 255.0.
    pub fn none() -> Normalize {
        Normalize::divide_by(1.0)
    }

    /// Pixel / 255, so 0.0 to 1.0.
    pub fn unit() -> Normalize {
        Normalize::divide_by(255.0)
    }

    /// Pixel / `divisor`.
    pub fn divide_by(divisor: f32) -> Normalize {
        Normalize {
            divisor,
            mean: Vec::new(),
            std: Vec::new(),
        }
    }

    /// Also subtracts `mean` and divides by `std` per channel (ImageNet-style:
    /// `Normalize::unit().mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])`).
    pub fn mean_std(mut self, mean: impl Into<Vec<f32>>, std: impl Into<Vec<f32>>) -> Normalize {
        self.mean = mean.into();
        self.std = std.into();
        self
    }

    fn per_channel(
        &self,
        values: &[f32],
        what: &str,
        channels: usize,
        unset: f32,
    ) -> Result<Vec<f32>, ImageError> {
        match values.len() {
            0 => Ok(vec![unset; channels]),
            1 => Ok(vec![values[0]; channels]),
            n if n == channels => Ok(values.to_vec()),
            n => Err(ImageError(format!(
                "normalize {what} has {n} values for an image with {channels} channels"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(pixels: &[[u8; 3]], width: u32) -> Image {
        let height = pixels.len() as u32 / width;
        Image::from_raw(width, height, Channels::Rgb, pixels.concat()).unwrap()
    }

    #[test]
    fn png_round_trips_gray_and_rgb() {
        let gray = Image::from_raw(3, 2, Channels::Gray, vec![0, 1, 2, 100, 200, 255]).unwrap();
        let png = gray.to_png().unwrap();
        assert_eq!(decode_gray(&png).unwrap(), gray);
        assert_eq!(
            decode_rgb(&png).unwrap().pixels(),
            &[
                0, 0, 0, 1, 1, 1, 2, 2, 2, 100, 100, 100, 200, 200, 200, 255, 255, 255
            ]
        );

        let color = rgb(&[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], 2);
        assert_eq!(decode_rgb(&color.to_png().unwrap()).unwrap(), color);
    }

    #[test]
    fn grayscale_matches_pillow_convert_l() {
        // Pillow: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0)) for each colour.
        let color = rgb(
            &[
                [255, 0, 0],
                [0, 255, 0],
                [0, 0, 255],
                [255, 255, 255],
                [12, 34, 56],
                [200, 100, 50],
            ],
            6,
        );
        let gray = decode_gray(&color.to_png().unwrap()).unwrap();
        assert_eq!(gray.pixels(), &[76, 150, 29, 255, 30, 124]);
    }

    #[test]
    fn jpeg_decodes() {
        let mut jpeg = Vec::new();
        let img = GrayImage::from_pixel(8, 8, image::Luma([128]));
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let decoded = decode_gray(&jpeg).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height(), decoded.channels()),
            (8, 8, Channels::Gray)
        );
        assert!(
            decoded.pixels().iter().all(|&p| p.abs_diff(128) <= 1),
            "{:?}",
            decoded.pixels()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode_gray(b"definitely not an image").unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        let truncated = &Image::from_raw(4, 4, Channels::Gray, vec![7; 16])
            .unwrap()
            .to_png()
            .unwrap()[..30];
        assert!(decode_gray(truncated).is_err());
        assert!(decode_gray(b"").is_err());
    }

    #[test]
    fn resize_changes_size_and_skips_same_size() {
        let img = Image::from_raw(2, 2, Channels::Gray, vec![0, 255, 255, 0]).unwrap();
        let same = img.clone().resize(2, 2);
        assert_eq!(same, img);
        let big = img.clone().resize_with(4, 4, Filter::Nearest);
        assert_eq!((big.width(), big.height()), (4, 4));
        assert_eq!(&big.pixels()[..4], &[0, 0, 255, 255]);
        let flat = Image::from_raw(4, 4, Channels::Gray, vec![90; 16])
            .unwrap()
            .resize(2, 2);
        assert_eq!(flat.pixels(), &[90; 4], "bilinear keeps a flat image flat");
        let rgb = rgb(&[[1, 2, 3]; 4], 2).resize(3, 1);
        assert_eq!((rgb.width(), rgb.height(), rgb.pixels().len()), (3, 1, 9));
    }

    #[test]
    fn unit_normalize_is_exactly_pixel_over_255() {
        let pixels: Vec<u8> = (0..=255).collect();
        let img = Image::from_raw(16, 16, Channels::Gray, pixels.clone()).unwrap();
        let t = img.to_tensor(&Normalize::unit()).unwrap();
        assert_eq!(t.shape(), &[1, 16, 16, 1]);
        let expected: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(t.as_f32().unwrap(), expected.as_slice());
        assert_eq!(
            img.to_tensor(&Normalize::none()).unwrap().as_f32().unwrap()[255],
            255.0
        );
    }

    #[test]
    fn mean_std_apply_per_channel_in_nhwc_order() {
        let img = rgb(&[[255, 0, 51], [0, 255, 102]], 2);
        let norm = Normalize::unit().mean_std([0.5, 0.0, 0.2], [0.5, 1.0, 0.1]);
        let t = img.to_tensor(&norm).unwrap();
        assert_eq!(t.shape(), &[1, 1, 2, 3]);
        let v = t.as_f32().unwrap();
        let want = [1.0, 0.0, 0.0, -1.0, 1.0, 2.0];
        assert!(
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{v:?}"
        );
        let one_for_all = img
            .to_tensor(&Normalize::none().mean_std([255.0], []))
            .unwrap();
        assert_eq!(one_for_all.as_f32().unwrap()[0], 0.0);
        assert!(
            img.to_tensor(&Normalize::unit().mean_std([0.1, 0.2], []))
                .is_err()
        );
    }

    #[test]
    fn u8_tensor_and_raw_size_checks() {
        let img = Image::from_raw(1, 2, Channels::Gray, vec![3, 4]).unwrap();
        let t = img.to_u8_tensor().unwrap();
        assert_eq!(
            (t.shape(), t.as_u8().unwrap()),
            (&[1i64, 2, 1, 1][..], &[3u8, 4][..])
        );
        let err = Image::from_raw(2, 2, Channels::Rgb, vec![0; 4]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a 2x2 Rgb image has 12 bytes of pixels, not 4"
        );
    }
}
