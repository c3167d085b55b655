//! Figures: grids of image tiles (atoms, Figure 5's denoising panels) and line plots (Figures 4
//! and 9), written as PNG.
//!
//! Tiles are drawn with the `image` crate; plots with `plotters` on an in-memory bitmap, then
//! encoded by the same `image` PNG encoder. Text uses DejaVu Sans, bundled with the crate
//! (`src/figures/DejaVuSans.ttf`, licence beside it), so no system font is needed. Every PNG is
//! written atomically (temporary file, then rename).

use std::path::Path;
use std::sync::Once;

use image::{GrayImage, ImageEncoder, Luma, RgbImage};
use ndarray::{ArrayView1, ArrayView2};
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// How the values of a tile map to gray levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TileScale {
    /// Each tile on its own: its minimum is black, its maximum white (a constant tile is mid
    /// gray). Used for atoms, whose scale carries no meaning.
    PerTile,
    /// One fixed range for all tiles: `lo` is black, `hi` white, values outside are clamped.
    /// Used to show images in pixel units (`0..1`).
    Fixed {
        /// The value drawn black.
        lo: f32,
        /// The value drawn white.
        hi: f32,
    },
}

/// The layout of a tile grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridLayout {
    /// Height and width of one tile in samples (e.g. 28 x 28 for MNIST).
    pub tile: (usize, usize),
    /// Tiles per row of the grid.
    pub cols: usize,
    /// Each sample is drawn as a `zoom` x `zoom` block of pixels.
    pub zoom: usize,
    /// Pixels of background between tiles and around the grid.
    pub pad: usize,
}

impl GridLayout {
    /// A layout of `cols` tiles per row, zoom 2, padding 2.
    pub fn new(tile: (usize, usize), cols: usize) -> Self {
        GridLayout {
            tile,
            cols,
            zoom: 2,
            pad: 2,
        }
    }

    /// The image size `(width, height)` in pixels for `n` tiles.
    pub fn size(&self, n: usize) -> (u32, u32) {
        let rows = n.div_ceil(self.cols.max(1));
        let w = self.cols * (self.tile.1 * self.zoom + self.pad) + self.pad;
        let h = rows * (self.tile.0 * self.zoom + self.pad) + self.pad;
        (w as u32, h as u32)
    }

    fn validate(&self, n: usize, dim: usize) -> Result<()> {
        if self.cols == 0 || self.zoom == 0 || self.tile.0 == 0 || self.tile.1 == 0 {
            return Err(Error::param(
                "grid layout",
                format!("{self:?}"),
                "tile sides, columns and zoom must be positive",
            ));
        }
        if self.tile.0 * self.tile.1 != dim {
            return Err(Error::shape(
                "image grid",
                format!(
                    "tiles of {}x{} need {} values each, the rows hold {dim}",
                    self.tile.0,
                    self.tile.1,
                    self.tile.0 * self.tile.1
                ),
            ));
        }
        if n == 0 {
            return Err(Error::shape("image grid", "no tiles to draw"));
        }
        let (w, h) = self.size(n);
        if w > 30_000 || h > 30_000 {
            return Err(Error::param(
                "grid layout",
                format!("{w}x{h} pixels"),
                "the image would be over 30,000 pixels on a side; draw fewer tiles or zoom less",
            ));
        }
        Ok(())
    }
}

/// Draws the rows of `tiles` (each a row-major `h x w` image) as a grid, row after row, on a
/// white background.
///
/// # Errors
/// [`Error::Shape`] when a row's length is not `h * w` or there are no rows;
/// [`Error::InvalidParameter`] for a degenerate layout or range;
/// [`Error::NonFiniteInput`] for NaN/inf values.
pub fn tile_grid(
    tiles: ArrayView2<'_, f32>,
    layout: GridLayout,
    scale: TileScale,
) -> Result<GrayImage> {
    let (n, dim) = tiles.dim();
    layout.validate(n, dim)?;
    if let TileScale::Fixed { lo, hi } = scale
        && !(lo.is_finite() && hi.is_finite() && hi > lo)
    {
        return Err(Error::param(
            "tile range",
            format!("{lo}..{hi}"),
            "needs finite lo < hi",
        ));
    }
    if let Some(((i, j), v)) = tiles.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFiniteInput {
            what: "image tiles".into(),
            index: (i, j),
            value: f64::from(*v),
        });
    }
    let (w, h) = layout.size(n);
    let mut img = GrayImage::from_pixel(w, h, Luma([255u8]));
    let (th, tw) = layout.tile;
    let z = layout.zoom;
    for (k, tile) in tiles.outer_iter().enumerate() {
        let (lo, hi) = match scale {
            TileScale::Fixed { lo, hi } => (lo, hi),
            TileScale::PerTile => tile_range(tile),
        };
        let x0 = layout.pad + (k % layout.cols) * (tw * z + layout.pad);
        let y0 = layout.pad + (k / layout.cols) * (th * z + layout.pad);
        for r in 0..th {
            for c in 0..tw {
                let g = gray(tile[r * tw + c], lo, hi);
                for dy in 0..z {
                    for dx in 0..z {
                        img.put_pixel(
                            (x0 + c * z + dx) as u32,
                            (y0 + r * z + dy) as u32,
                            Luma([g]),
                        );
                    }
                }
            }
        }
    }
    Ok(img)
}

fn tile_range(tile: ArrayView1<'_, f32>) -> (f32, f32) {
    let lo = tile.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = tile.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (lo, hi)
}

fn gray(v: f32, lo: f32, hi: f32) -> u8 {
    if hi <= lo {
        return 128;
    }
    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    (t * 255.0).round() as u8
}

/// Writes a gray image as PNG, atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save_gray_png(img: &GrayImage, path: &Path) -> Result<()> {
    save_png(
        img.as_raw(),
        img.dimensions(),
        image::ExtendedColorType::L8,
        path,
    )
}

/// Writes an RGB image as PNG, atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save_rgb_png(img: &RgbImage, path: &Path) -> Result<()> {
    save_png(
        img.as_raw(),
        img.dimensions(),
        image::ExtendedColorType::Rgb8,
        path,
    )
}

fn save_png(
    raw: &[u8],
    (w, h): (u32, u32),
    color: image::ExtendedColorType,
    path: &Path,
) -> Result<()> {
    write_atomic(path, |out| {
        image::codecs::png::PngEncoder::new(out)
            .write_image(raw, w, h, color)
            .map_err(std::io::Error::other)
    })
}

/// One line of a [`LinePlot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's label.
    pub label: String,
    /// The points `(x, y)`, drawn joined in the order given.
    pub points: Vec<(f64, f64)>,
    /// Optional error bars: a half-width per point (e.g. one standard deviation).
    pub err: Option<Vec<f64>>,
}

/// A line plot: several [`Series`] on common axes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    /// The title above the plot.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// A logarithmic x axis (all x must then be positive).
    pub log_x: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// The image size in pixels (width, height).
    pub size: (u32, u32),
    /// Where the legend goes.
    pub legend: LegendCorner,
}

/// A corner of the plotting area (for the legend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegendCorner {
    /// Top left.
    UpperLeft,
    /// Top right.
    UpperRight,
    /// Bottom left.
    LowerLeft,
    /// Bottom right.
    LowerRight,
}

impl LinePlot {
    /// An empty plot of 800 x 560 pixels, the legend in the lower right corner.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            series: Vec::new(),
            size: (800, 560),
            legend: LegendCorner::LowerRight,
        }
    }
}

const FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bundled file is a valid TrueType font; a failure here would only lose the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Renders a line plot to an RGB image.
///
/// # Errors
/// [`Error::Shape`] for a plot without points or error bars of the wrong length;
/// [`Error::NonFiniteInput`] for a NaN/inf coordinate; [`Error::InvalidParameter`] for a
/// non-positive x on a log axis or a tiny image; [`Error::Figure`] if drawing fails.
pub fn render_plot(plot: &LinePlot) -> Result<RgbImage> {
    let (w, h) = plot.size;
    if w < 200 || h < 150 || w > 8000 || h > 8000 {
        return Err(Error::param(
            "plot size",
            format!("{w}x{h}"),
            "must be between 200x150 and 8000x8000 pixels",
        ));
    }
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (si, s) in plot.series.iter().enumerate() {
        if let Some(e) = &s.err
            && e.len() != s.points.len()
        {
            return Err(Error::shape(
                format!("plot series `{}`", s.label),
                format!("{} error bars for {} points", e.len(), s.points.len()),
            ));
        }
        for (pi, &(x, y)) in s.points.iter().enumerate() {
            let e = s.err.as_ref().map_or(0.0, |e| e[pi]);
            if !(x.is_finite() && y.is_finite() && e.is_finite()) {
                return Err(Error::NonFiniteInput {
                    what: format!("plot series `{}`", s.label),
                    index: (si, pi),
                    value: if x.is_finite() { y } else { x },
                });
            }
            if plot.log_x && x <= 0.0 {
                return Err(Error::param(
                    "plot x value",
                    x.to_string(),
                    "a logarithmic x axis needs positive x",
                ));
            }
            xs.push(x);
            ys.push(y - e.abs());
            ys.push(y + e.abs());
        }
    }
    if xs.is_empty() {
        return Err(Error::shape("line plot", "no points to draw"));
    }
    let (x0, x1) = padded_range(&xs, plot.log_x);
    let (y0, y1) = padded_range(&ys, false);
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let draw_err = |e: String| Error::Figure {
        what: plot.title.clone(),
        detail: e,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&plot.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(plot.x_label.as_str())
                    .y_desc(plot.y_label.as_str())
                    .label_style(("sans-serif", 15))
                    .axis_desc_style(("sans-serif", 17))
                    .draw()
                    .map_err(|e| draw_err(e.to_string()))?;
                for (i, s) in plot.series.iter().enumerate() {
                    let color = PALETTE[i % PALETTE.len()];
                    chart
                        .draw_series(LineSeries::new(
                            s.points.iter().copied(),
                            color.stroke_width(2),
                        ))
                        .map_err(|e| draw_err(e.to_string()))?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| draw_err(e.to_string()))?;
                    if let Some(err) = &s.err {
                        chart
                            .draw_series(s.points.iter().zip(err).map(|(&(x, y), &e)| {
                                PathElement::new(
                                    vec![(x, y - e), (x, y + e)],
                                    color.stroke_width(1),
                                )
                            }))
                            .map_err(|e| draw_err(e.to_string()))?;
                    }
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 15))
                    .position(match plot.legend {
                        LegendCorner::UpperLeft => SeriesLabelPosition::UpperLeft,
                        LegendCorner::UpperRight => SeriesLabelPosition::UpperRight,
                        LegendCorner::LowerLeft => SeriesLabelPosition::LowerLeft,
                        LegendCorner::LowerRight => SeriesLabelPosition::LowerRight,
                    })
                    .draw()
                    .map_err(|e| draw_err(e.to_string()))?;
            }};
        }
        if plot.log_x {
            draw!(
                builder
                    .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                    .map_err(|e| draw_err(e.to_string()))?
            );
        } else {
            draw!(
                builder
                    .build_cartesian_2d(x0..x1, y0..y1)
                    .map_err(|e| draw_err(e.to_string()))?
            );
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| draw_err("bitmap of the wrong size".into()))
}

fn padded_range(v: &[f64], log: bool) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if log {
        return (lo / 1.3, hi * 1.3);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - 0.06 * span, hi + 0.06 * span)
}

/// Renders a line plot and writes it as PNG, atomically.
///
/// # Errors
/// Those of [`render_plot`] and [`save_rgb_png`].
pub fn save_plot(plot: &LinePlot, path: &Path) -> Result<()> {
    save_rgb_png(&render_plot(plot)?, path)
}

/// The decoder's atoms as a grid (Figures 2, 3, 7, 8), `cols` per row, each atom scaled on its
/// own for display. Linear decoders: the columns of `W`; one-hidden-layer decoders:
/// `D(e_i) - D(0)` (the paper displays the bias-free `W2 W1 e_i`, its footnote 6; subtracting
/// `D(0)` removes the bias' effect the same way, keeping the ReLU).
///
/// # Errors
/// [`Error::Shape`] when the model does not know its image shape (train with an image shape, or
/// use [`tile_grid`] on [`crate::train::SparseCoder::atoms`] yourself); those of [`tile_grid`].
pub fn atoms_image<B: crate::backend::Backend<f32>>(
    model: &crate::train::SparseCoder<B>,
    cols: usize,
) -> Result<GrayImage> {
    let shape = model.image_shape().ok_or_else(|| {
        Error::shape(
            "atoms image",
            "the model records no image shape for its samples",
        )
    })?;
    let atoms = model.atoms()?;
    tile_grid(
        atoms.view(),
        GridLayout::new(shape, cols),
        TileScale::PerTile,
    )
}
