//! `crop` and `center-crop`: a window of an image tensor, any numeric dtype, copied row by row.

use super::{Array, Budget, Layout, OpResult, image_dims, invalid};

/// The `width` × `height` window at (`left`, `top`): Pillow's `img.crop((l, t, l + w, t + h))`,
/// numpy's `a[t:t+h, l:l+w]`. A window not wholly inside the image is `invalid`.
pub fn crop(
    image: &Array,
    layout: Layout,
    [left, top, width, height]: [u32; 4],
    budget: &mut Budget,
) -> OpResult<Array> {
    let [n, h, w, c] = image_dims(image, layout, "image")?;
    let (l, t, cw, ch) = (left as usize, top as usize, width as usize, height as usize);
    if cw == 0 || ch == 0 || l + cw > w || t + ch > h {
        return invalid(format!(
            "left, top, width, height: the window {width}x{height} at ({left}, {top}) is not \
             inside the {w}x{h} image"
        ));
    }
    let size = image.dtype.size().unwrap_or(1);
    let mut out = budget.with_capacity::<u8>(n * c * ch * cw * size, "the cropped image")?;
    let data = &image.data;
    match layout {
        Layout::Hwc => {
            let row = w * c * size;
            for i in 0..n {
                budget.check()?;
                for y in t..t + ch {
                    let start = (i * h + y) * row + l * c * size;
                    out.extend_from_slice(&data[start..start + cw * c * size]);
                }
            }
        }
        Layout::Chw => {
            for plane in 0..n * c {
                budget.check()?;
                for y in t..t + ch {
                    let start = ((plane * h) + y) * w * size + l * size;
                    out.extend_from_slice(&data[start..start + cw * size]);
                }
            }
        }
    }
    let (ch, cw, c) = (ch as i64, cw as i64, c as i64);
    let mut shape = match layout {
        Layout::Hwc => vec![ch, cw, c],
        Layout::Chw => vec![c, ch, cw],
    };
    if image.shape.len() == 4 {
        shape.insert(0, n as i64);
    }
    Ok(Array {
        dtype: image.dtype,
        shape,
        data: out,
    })
}

/// The centered window, as torchvision's `CenterCrop`: offsets `round((W - width) / 2)` and
/// `round((H - height) / 2)`, halves to even as Python's `round`.
pub fn center_crop(
    image: &Array,
    layout: Layout,
    width: u32,
    height: u32,
    budget: &mut Budget,
) -> OpResult<Array> {
    let [_, h, w, _] = image_dims(image, layout, "image")?;
    if width as usize > w || height as usize > h || width == 0 || height == 0 {
        return invalid(format!(
            "width, height: {width}x{height} does not fit in the {w}x{h} image"
        ));
    }
    let offset = |whole: usize, part: u32| -> u32 {
        let twice = whole as u32 - part; // round(twice / 2), ties to even
        let (half, odd) = (twice / 2, twice % 2 == 1);
        if odd && half % 2 == 1 { half + 1 } else { half }
    };
    crop(
        image,
        layout,
        [offset(w, width), offset(h, height), width, height],
        budget,
    )
}
