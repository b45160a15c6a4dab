//! One HLS output, shared by live broadcasts and VOD transcodes: the async shell around the
//! pure [`HlsState`]. It creates each content key the state asks for (stored wrapped by
//! `drm`), and hands the state's storage operations to the bounded [`Uploader`] in order.

use super::cmaf::CmafState;
use super::hls::{HlsState, Op};
use super::llhls::Registry;
use super::uploader::Uploader;
use std::sync::Arc;

use crate::drm::ContentKeys;
use crate::drm::speke::ContentKeyProvider;
use crate::media::cenc::Scheme;
use crate::media::{Packaging, Part, RenditionOut, Segment};
use crate::storage::ObjectKey;

/// Why a segment could not be packaged.
#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("could not create a content key: {0}")]
    ContentKey(#[source] crate::db::DbError),
    #[error("could not get a content key: {0:#}")]
    KeyServer(anyhow::Error),
}

/// One HLS output (a broadcast or an asset).
pub struct HlsOutput {
    tenant_id: String,
    prefix: String,
    content_keys: ContentKeys,
    /// Where a CMAF output's key comes from, when not `content_keys` (a key server).
    key_provider: Option<Arc<dyn ContentKeyProvider>>,
    state: State,
    low_latency: Option<Registry>,
}

/// MPEG-TS with AES-128, or CMAF with common encryption (and DASH), or both from the same
/// segments: then the CMAF set is written under [`CMAF_BESIDE`], except its DASH manifest,
/// which stays at the top (there is no TS DASH) and points into it with a `BaseURL`.
// One per output, for the output's life: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum State {
    Ts(HlsState),
    Cmaf(CmafState),
    Both(HlsState, CmafState),
}

/// Where a `both` output's CMAF set lies, under the output's prefix.
pub const CMAF_BESIDE: &str = "cmaf/";

/// Which set of files a state's operations are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    /// The output's only set, or its TS set.
    Main,
    /// A `both` output's CMAF set.
    Beside,
}

/// The same call on every state the output has, with the set each one writes.
macro_rules! each {
    ($state:expr, $s:ident => $call:expr) => {
        match $state {
            State::Ts($s) => vec![(Set::Main, $call)],
            State::Cmaf($s) => vec![(Set::Main, $call)],
            State::Both(ts, cmaf) => {
                let $s = ts;
                let first = $call;
                let $s = cmaf;
                vec![(Set::Main, first), (Set::Beside, $call)]
            }
        }
    };
}

/// A call on the state whose files are the main set (the TS one of a `both` output).
macro_rules! main {
    ($state:expr, $s:ident => $call:expr) => {
        match $state {
            State::Ts($s) | State::Both($s, _) => $call,
            State::Cmaf($s) => $call,
        }
    };
}

/// Where and how an [`HlsOutput`] writes.
pub struct OutputParams {
    pub tenant_id: String,
    /// Storage prefix, ending in `/`.
    pub prefix: String,
    /// Base URL of key URIs (`BASE/keys/ID`).
    pub public_url: String,
    pub window: Option<usize>,
    /// New content key every this many segments; 0: one key.
    pub rotation: u64,
    pub target_duration: u32,
    pub content_keys: ContentKeys,
    /// Live: every segment carries `EXT-X-PROGRAM-DATE-TIME` from the wall clock.
    pub program_date_time: bool,
    pub packaging: Packaging,
    /// The common-encryption scheme of CMAF output.
    pub cenc_scheme: Scheme,
    /// Live CMAF: parts and LL-HLS playlists, published here for the delivery.
    pub low_latency: Option<Registry>,
    /// CMAF: the key server that gives the content key (SPEKE), instead of `content_keys`.
    pub key_provider: Option<Arc<dyn ContentKeyProvider>>,
}

impl HlsOutput {
    pub fn new(p: OutputParams) -> Self {
        let ts = || {
            HlsState::new(
                p.public_url.clone(),
                p.window,
                p.rotation,
                p.target_duration,
            )
        };
        let cmaf = |beside: bool| {
            let mut cmaf = CmafState::new(p.cenc_scheme, p.window, p.target_duration);
            cmaf.rotate_keys_every(p.rotation);
            if p.low_latency.is_some() {
                cmaf.low_latency();
            }
            if beside {
                cmaf.dash_base_url(CMAF_BESIDE);
            }
            cmaf
        };
        let mut state = match p.packaging {
            Packaging::Ts => State::Ts(ts()),
            Packaging::Cmaf => State::Cmaf(cmaf(false)),
            Packaging::Both => State::Both(ts(), cmaf(true)),
        };
        let low_latency = p.low_latency.filter(|_| p.packaging.cmaf());
        if p.program_date_time {
            each!(&mut state, s => s.stamp_program_date_time(crate::clock::now_ms));
        }
        Self {
            tenant_id: p.tenant_id,
            prefix: p.prefix,
            content_keys: p.content_keys,
            key_provider: p.key_provider,
            state,
            low_latency,
        }
    }

    /// RFC 6381 codecs of the source's video, for renditions whose segments do not tell.
    pub fn set_video_codec(&mut self, codec: Option<String>) {
        if let State::Ts(s) | State::Both(s, _) = &mut self.state {
            s.video_codec = codec;
        }
    }

    /// RFC 6381 codecs of the source's audio.
    pub fn set_audio_codec(&mut self, codec: Option<String>) {
        if let State::Ts(s) | State::Both(s, _) = &mut self.state {
            s.audio_codec = codec;
        }
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        each!(&mut self.state, s => s.set_renditions(list.clone()));
    }

    /// After a reconnect every rendition's next segment starts a discontinuity.
    pub fn reopen(&mut self) {
        each!(&mut self.state, s => s.reopen());
    }

    pub async fn add_segment(
        &mut self,
        segment: Segment,
        uploader: &Uploader,
    ) -> Result<(), PackagerError> {
        self.keys_for(&segment.rendition).await?;
        let rendition = segment.rendition.clone();
        let done = match &mut self.state {
            State::Ts(s) => vec![(Set::Main, s.add_segment(segment))],
            State::Cmaf(s) => vec![(Set::Main, s.add_segment(segment))],
            State::Both(ts, cmaf) => vec![
                (Set::Main, ts.add_segment(segment.clone())),
                (Set::Beside, cmaf.add_segment(segment)),
            ],
        };
        for (set, ops) in done {
            match ops {
                Some(ops) => self.apply(set, ops, uploader).await,
                None => tracing::warn!(%rendition, "segment for an unknown rendition"),
            }
        }
        Ok(())
    }

    /// Creates the content keys the next segment of `rendition` needs, if they are not
    /// known yet: from the store, or for CMAF from the key server when there is one.
    async fn keys_for(&mut self, rendition: &str) -> Result<(), PackagerError> {
        let (ts, cmaf) = match &mut self.state {
            State::Ts(ts) => (Some(ts), None),
            State::Cmaf(cmaf) => (None, Some(cmaf)),
            State::Both(ts, cmaf) => (Some(ts), Some(cmaf)),
        };
        if let Some(state) = ts
            && let Some(period) = state.key_needed(rendition)
        {
            let (id, key) = self
                .content_keys
                .create(&self.tenant_id, &self.prefix)
                .await
                .map_err(PackagerError::ContentKey)?;
            state.add_key(period, id, key);
        }
        if let Some(state) = cmaf
            && let Some(period) = state.key_needed(rendition)
        {
            let provider: &dyn ContentKeyProvider = match &self.key_provider {
                Some(p) => p.as_ref(),
                None => &self.content_keys,
            };
            let provided = provider
                .content_key(&self.tenant_id, &self.prefix)
                .await
                .map_err(PackagerError::KeyServer)?;
            state.set_key(period, provided);
        }
        Ok(())
    }

    /// How long the pipeline's parts should be: `Some` for a low-latency output.
    pub fn part_duration(&self) -> Option<std::time::Duration> {
        self.low_latency
            .as_ref()
            .map(|_| std::time::Duration::from_millis(super::llhls::PART_CUT_MS))
    }

    /// A part of a rendition's open segment (low-latency outputs; others ignore it).
    pub async fn add_part(&mut self, part: Part, uploader: &Uploader) -> Result<(), PackagerError> {
        if matches!(self.state, State::Ts(_)) {
            return Ok(());
        }
        self.keys_for(&part.rendition).await?;
        let (set, ops) = match &mut self.state {
            State::Cmaf(state) => (Set::Main, state.add_part(part)),
            State::Both(_, state) => (Set::Beside, state.add_part(part)),
            State::Ts(_) => return Ok(()),
        };
        if let Some(ops) = ops {
            self.apply(set, ops, uploader).await;
        }
        Ok(())
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST.
    pub async fn end(&mut self, uploader: &Uploader) {
        for (set, ops) in each!(&mut self.state, s => s.end()) {
            self.apply(set, ops, uploader).await;
        }
    }

    /// Rewrites every media playlist as a finished VOD playlist.
    pub async fn write_vod_playlists(&mut self, uploader: &Uploader) {
        for (set, ops) in each!(&mut self.state, s => s.vod_playlists()) {
            self.apply(set, ops, uploader).await;
        }
    }

    /// Whether any segment was written.
    pub fn has_media(&self) -> bool {
        main!(&self.state, s => s.has_media())
    }

    /// Media duration: the longest rendition's.
    pub fn duration_ms(&self) -> Option<i64> {
        main!(&self.state, s => s.duration_ms())
    }

    async fn apply(&self, set: Set, ops: Vec<Op>, uploader: &Uploader) {
        let beside = match set {
            Set::Main => "",
            Set::Beside => CMAF_BESIDE,
        };
        let key = |name: &str| {
            // A `both` output's DASH manifest is at the top, beside the TS master playlist.
            let beside = if name == super::dash::MANIFEST {
                ""
            } else {
                beside
            };
            ObjectKey::parse(&format!("{}{beside}{name}", self.prefix))
                .expect("prefix and names are validated")
        };
        for op in ops {
            match op {
                Op::Put {
                    name,
                    body,
                    content_type,
                } => uploader.put(key(&name), body, content_type).await,
                Op::Delete { name } => uploader.delete(key(&name)).await,
                Op::Live { track, snapshot } => {
                    if let Some(registry) = &self.low_latency {
                        registry.publish(&format!("{}{beside}", self.prefix), &track, snapshot);
                    }
                }
            }
        }
    }
}
