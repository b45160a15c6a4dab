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

/// MPEG-TS with AES-128, or CMAF with common encryption (and DASH).
enum State {
    Ts(HlsState),
    Cmaf(CmafState),
}

/// The same call on either state.
macro_rules! both {
    ($state:expr, $s:ident => $call:expr) => {
        match $state {
            State::Ts($s) => $call,
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
    /// Live CMAF: parts and LL-HLS playlists, published here for the delivery.
    pub low_latency: Option<Registry>,
    /// CMAF: the key server that gives the content key (SPEKE), instead of `content_keys`.
    pub key_provider: Option<Arc<dyn ContentKeyProvider>>,
}

impl HlsOutput {
    pub fn new(p: OutputParams) -> Self {
        let mut state = match p.packaging {
            Packaging::Ts => State::Ts(HlsState::new(
                p.public_url,
                p.window,
                p.rotation,
                p.target_duration,
            )),
            Packaging::Cmaf => {
                let mut cmaf = CmafState::new(Scheme::Cbcs, p.window, p.target_duration);
                if p.low_latency.is_some() {
                    cmaf.low_latency();
                }
                State::Cmaf(cmaf)
            }
        };
        let low_latency = p.low_latency.filter(|_| p.packaging == Packaging::Cmaf);
        if p.program_date_time {
            both!(&mut state, s => s.stamp_program_date_time(crate::clock::now_ms));
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
        if let State::Ts(s) = &mut self.state {
            s.video_codec = codec;
        }
    }

    /// RFC 6381 codecs of the source's audio.
    pub fn set_audio_codec(&mut self, codec: Option<String>) {
        if let State::Ts(s) = &mut self.state {
            s.audio_codec = codec;
        }
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        both!(&mut self.state, s => s.set_renditions(list));
    }

    /// After a reconnect every rendition's next segment starts a discontinuity.
    pub fn reopen(&mut self) {
        both!(&mut self.state, s => s.reopen());
    }

    pub async fn add_segment(
        &mut self,
        segment: Segment,
        uploader: &Uploader,
    ) -> Result<(), PackagerError> {
        self.key_for(&segment.rendition).await?;
        let rendition = segment.rendition.clone();
        match both!(&mut self.state, s => s.add_segment(segment)) {
            Some(ops) => self.apply(ops, uploader).await,
            None => tracing::warn!(%rendition, "segment for an unknown rendition"),
        }
        Ok(())
    }

    /// Creates the content key the next segment of `rendition` needs, if it is not known
    /// yet: from the store, or for CMAF from the key server when there is one.
    async fn key_for(&mut self, rendition: &str) -> Result<(), PackagerError> {
        let Some(period) = both!(&self.state, s => s.key_needed(rendition)) else {
            return Ok(());
        };
        match &mut self.state {
            State::Cmaf(state) => {
                let provider: &dyn ContentKeyProvider = match &self.key_provider {
                    Some(p) => p.as_ref(),
                    None => &self.content_keys,
                };
                let provided = provider
                    .content_key(&self.tenant_id, &self.prefix)
                    .await
                    .map_err(PackagerError::KeyServer)?;
                state.set_key(provided);
            }
            State::Ts(state) => {
                let (id, key) = self
                    .content_keys
                    .create(&self.tenant_id, &self.prefix)
                    .await
                    .map_err(PackagerError::ContentKey)?;
                state.add_key(period, id, key);
            }
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
        if !matches!(self.state, State::Cmaf(_)) {
            return Ok(());
        }
        self.key_for(&part.rendition).await?;
        let State::Cmaf(state) = &mut self.state else {
            return Ok(());
        };
        if let Some(ops) = state.add_part(part) {
            self.apply(ops, uploader).await;
        }
        Ok(())
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST.
    pub async fn end(&mut self, uploader: &Uploader) {
        let ops = both!(&mut self.state, s => s.end());
        self.apply(ops, uploader).await;
    }

    /// Rewrites every media playlist as a finished VOD playlist.
    pub async fn write_vod_playlists(&mut self, uploader: &Uploader) {
        let ops = both!(&mut self.state, s => s.vod_playlists());
        self.apply(ops, uploader).await;
    }

    /// Whether any segment was written.
    pub fn has_media(&self) -> bool {
        both!(&self.state, s => s.has_media())
    }

    /// Media duration: the longest rendition's.
    pub fn duration_ms(&self) -> Option<i64> {
        both!(&self.state, s => s.duration_ms())
    }

    async fn apply(&self, ops: Vec<Op>, uploader: &Uploader) {
        let key = |name: &str| {
            ObjectKey::parse(&format!("{}{name}", self.prefix))
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
                        registry.publish(&self.prefix, &track, snapshot);
                    }
                }
            }
        }
    }
}
