//! Storyboards: tiles of the smallest rendition at fixed times, one JPEG sprite, and the
//! WebVTT that points players at each tile.

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use super::*;
use crate::media::webvtt::{self, Cue};
use crate::pipeline::gst::{make, queue_raw};

/// Most tiles in one storyboard sprite; longer media get a wider interval.
pub const MAX_STORYBOARD_TILES: usize = 100;

/// A frames sprite for player scrubbing previews (see [`storyboard_vtt`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Storyboard {
    /// The sprite, JPEG; `min(tiles, columns)` tiles wide, rows of `columns`.
    pub jpeg: Vec<u8>,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Per tile, in time order: (start s, end s, x, y) with x/y the tile's top-left pixel.
    pub tiles: Vec<(f64, f64, u32, u32)>,
}

/// A frame within this of a tile's time counts as that tile's frame (timestamp rounding).
pub(super) const TILE_TOLERANCE_S: f64 = 0.005;

/// Frame time in stream time (what `duration_s` and the tile times are in).
pub(super) fn stream_time_s(
    seg: &gst::FormattedSegment<gst::ClockTime>,
    pts: gst::ClockTime,
) -> f64 {
    seg.to_stream_time(pts).unwrap_or(pts).nseconds() as f64 / 1e9
}

/// Tile start times: every `interval_s` from 0 while before `duration_s`, at most
/// [`MAX_STORYBOARD_TILES`] (the interval widened to fit).
pub(super) fn tile_times(duration_s: f64, interval_s: f64) -> Vec<f64> {
    let mut n = (duration_s / interval_s - 1e-9).ceil().max(1.0) as usize;
    let mut interval = interval_s;
    if n > MAX_STORYBOARD_TILES {
        n = MAX_STORYBOARD_TILES;
        interval = duration_s / n as f64;
    }
    (0..n).map(|k| k as f64 * interval).collect()
}

/// Storyboard tiles to take from a transcode's own decoded frames (no second decode of the
/// file): one every `interval_s` seconds, `tile_width` wide, rows of `columns`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoryboardSpec {
    pub interval_s: f64,
    pub tile_width: u32,
    pub columns: u32,
}

impl StoryboardSpec {
    pub(super) fn check(&self) -> Result<(), VodError> {
        if self.interval_s.is_nan()
            || self.interval_s <= 0.0
            || self.tile_width < 2
            || self.columns == 0
        {
            return Err("storyboard: bad interval, width or columns".into());
        }
        Ok(())
    }
}

/// Lets through, on `pad`, only the first frame at or after each tile time; every other
/// buffer is consumed before it costs a conversion. (`Handled`, not `Drop`: the bindings
/// release the buffer and core 1.22.0 then unrefs NULL on `Drop`.)
pub(super) fn pick_tile_frames(pad: &gst::Pad, times: Arc<Vec<f64>>) {
    let state = Mutex::new((gst::FormattedSegment::<gst::ClockTime>::new(), 0usize));
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| match &info.data {
            Some(gst::PadProbeData::Event(ev)) => {
                if let gst::EventView::Segment(s) = ev.view()
                    && let Ok(s) = s.segment().clone().downcast::<gst::ClockTime>()
                {
                    state.lock().unwrap().0 = s;
                }
                gst::PadProbeReturn::Ok
            }
            Some(gst::PadProbeData::Buffer(b)) => {
                let Some(pts) = b.pts() else {
                    return gst::PadProbeReturn::Handled;
                };
                let (seg, next) = &mut *state.lock().unwrap();
                let st = stream_time_s(seg, pts);
                if *next < times.len() && times[*next] <= st + TILE_TOLERANCE_S {
                    while *next < times.len() && times[*next] <= st + TILE_TOLERANCE_S {
                        *next += 1;
                    }
                    gst::PadProbeReturn::Ok
                } else {
                    gst::PadProbeReturn::Handled
                }
            }
            _ => gst::PadProbeReturn::Ok,
        },
    );
}

/// Tile frames collected so far: packed RGBx, one per tile time in order (a frame repeats
/// when the media has a gap longer than the interval).
#[derive(Default)]
pub(super) struct Tiles {
    pub(super) frames: Vec<Vec<u8>>,
    pub(super) height: u32,
}

impl Tiles {
    /// Takes one picked frame (RGBx, `tile_width` wide) for every tile due by its time.
    pub(super) fn take(
        &mut self,
        sample: &gst::Sample,
        times: &[f64],
        tile_width: u32,
    ) -> Result<(), VodError> {
        let caps = sample.caps().ok_or("frame without caps")?;
        let vi = gstreamer_video::VideoInfo::from_caps(caps).map_err(gerr)?;
        let buf = sample.buffer().ok_or("empty sample")?;
        let st = match (sample.segment(), buf.pts()) {
            (Some(s), Some(pts)) => match s.downcast_ref::<gst::ClockTime>() {
                Some(s) => stream_time_s(s, pts),
                None => pts.nseconds() as f64 / 1e9,
            },
            _ => return Ok(()),
        };
        self.height = vi.height();
        let map = buf.map_readable().map_err(gerr)?;
        // Packed rows of tile_width * 4 bytes (the stride may be padded).
        let stride = vi.stride()[0] as usize;
        let row = tile_width as usize * 4;
        let mut px = Vec::with_capacity(row * self.height as usize);
        for y in 0..self.height as usize {
            px.extend_from_slice(&map[y * stride..y * stride + row]);
        }
        while self.frames.len() < times.len() && times[self.frames.len()] <= st + TILE_TOLERANCE_S {
            self.frames.push(px.clone());
        }
        Ok(())
    }

    /// The sprite: tiles copied into a canvas (RGBx, black background), JPEG-encoded.
    pub(super) fn compose(
        &self,
        times: &[f64],
        duration_s: f64,
        tile_width: u32,
        columns: u32,
    ) -> Result<Storyboard, VodError> {
        if self.frames.is_empty() {
            return Err("no video frame decoded".into());
        }
        let interval = if times.len() > 1 {
            times[1]
        } else {
            duration_s
        };
        let (tw, th) = (tile_width, self.height);
        let n = self.frames.len() as u32;
        let cols = columns.min(n);
        let rows = n.div_ceil(columns);
        let (cw, ch) = (cols * tw, rows * th);
        let mut canvas = vec![0u8; (cw * ch * 4) as usize];
        let mut tiles = Vec::with_capacity(n as usize);
        for (k, px) in self.frames.iter().enumerate() {
            let (x, y) = ((k as u32 % columns) * tw, (k as u32 / columns) * th);
            let row = tw as usize * 4;
            for r in 0..th as usize {
                let dst = ((y as usize + r) * cw as usize + x as usize) * 4;
                canvas[dst..dst + row].copy_from_slice(&px[r * row..(r + 1) * row]);
            }
            let start = times[k];
            let end = times
                .get(k + 1)
                .copied()
                .unwrap_or(duration_s)
                .min(duration_s);
            let end = if end > start { end } else { start + interval };
            tiles.push((start, end, x, y));
        }
        let jpeg = encode_jpeg(canvas, cw, ch)?;
        Ok(Storyboard {
            jpeg,
            tile_width: tw,
            tile_height: th,
            tiles,
        })
    }
}

/// A storyboard branch on a running transcode: `from` is a tee of raw I420 frames of
/// `width`x`height` (display-oriented, square pixels). Only the picked frames are scaled and
/// converted:
///
/// ```text
/// from ! queue [probe: frames at tile times] ! videoscale ! videoconvert
///      ! video/x-raw,RGBx,tile WxH ! appsink
/// ```
pub(super) struct TileBranch {
    pub(super) times: Arc<Vec<f64>>,
    pub(super) tiles: Arc<Mutex<Tiles>>,
    pub(super) tile_width: u32,
    pub(super) columns: u32,
    pub(super) duration_s: f64,
}

impl TileBranch {
    pub(super) fn attach(
        p: &gst::Pipeline,
        from: &gst::Element,
        (width, height): (u32, u32),
        spec: &StoryboardSpec,
        duration_s: f64,
    ) -> Result<Self, VodError> {
        let tw = spec.tile_width & !1;
        let th =
            ((tw as f64 * height as f64 / width.max(1) as f64 / 2.0).round() as i32 * 2).max(2);
        let times = Arc::new(tile_times(duration_s, spec.interval_s));
        let q = queue_raw()?;
        let scale = make("videoscale")?;
        let conv = make("videoconvert")?;
        let cf = make("capsfilter")?;
        cf.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "RGBx")
                .field("width", tw as i32)
                .field("height", th)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        let tiles = Arc::new(Mutex::new(Tiles::default()));
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .enable_last_sample(false)
            .build();
        // Does not hold up the pipeline's start (it may see its first frame only after the
        // other sinks prerolled); the t = 0 tile still waits in it until PLAYING.
        sink.set_property("async", false);
        let (t, frames) = (times.clone(), tiles.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Err(e) = frames.lock().unwrap().take(&sample, &t, tw) {
                        tracing::warn!(error = %e, "storyboard frame skipped");
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        p.add_many([&q, &scale, &conv, &cf, sink.upcast_ref()])
            .map_err(gerr)?;
        gst::Element::link_many([from, &q, &scale, &conv, &cf, sink.upcast_ref()]).map_err(gerr)?;
        pick_tile_frames(&q.static_pad("sink").unwrap(), times.clone());
        Ok(TileBranch {
            times,
            tiles,
            tile_width: tw,
            columns: spec.columns,
            duration_s,
        })
    }

    pub(super) fn finish(&self) -> Result<Storyboard, VodError> {
        self.tiles.lock().unwrap().compose(
            &self.times,
            self.duration_s,
            self.tile_width,
            self.columns,
        )
    }
}

/// `appsrc ! videoconvert ! jpegenc ! appsink` on one RGBx image.
pub(super) fn encode_jpeg(rgbx: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>, VodError> {
    let p = gst::Pipeline::new();
    p.use_clock(None::<&gst::Clock>);
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGBx")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let conv = make("videoconvert")?;
    let enc = make("jpegenc")?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    p.add_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()])
        .map_err(gerr)?;
    gst::Element::link_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()]).map_err(gerr)?;
    let res = (|| -> Result<Vec<u8>, VodError> {
        p.set_state(gst::State::Playing)
            .map_err(|_| "cannot start jpeg encoder".to_string())?;
        let mut buf = gst::Buffer::from_mut_slice(rgbx);
        buf.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
        src.push_buffer(buf).map_err(gerr)?;
        let _ = src.end_of_stream();
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(20))
            .ok_or_else(|| {
                match p
                    .bus()
                    .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
                {
                    Some(m) => match m.view() {
                        gst::MessageView::Error(e) => format!("jpegenc: {}", e.error()),
                        _ => "jpegenc: no output".into(),
                    },
                    None => "jpegenc: no output".into(),
                }
            })?;
        let map = sample
            .buffer()
            .ok_or("empty jpeg")?
            .map_readable()
            .map_err(gerr)?;
        Ok(map.as_slice().to_vec())
    })();
    let _ = p.set_state(gst::State::Null);
    res
}

/// WebVTT for player scrubbing previews: one cue per tile pointing into the sprite
/// (`{image_uri}#xywh=x,y,w,h`, the media-fragment syntax players such as video.js,
/// JW Player and Plyr read).
pub fn storyboard_vtt(sb: &Storyboard, image_uri: &str) -> String {
    let cues: Vec<Cue> = sb
        .tiles
        .iter()
        .map(|(start, end, x, y)| Cue {
            start_ms: webvtt::ms(*start),
            end_ms: webvtt::ms(*end),
            text: format!(
                "{image_uri}#xywh={x},{y},{},{}",
                sb.tile_width, sb.tile_height
            ),
        })
        .collect();
    webvtt::write(&[], &cues)
}
