//! Statuses, stored as text. Each is an enum in Rust, its column a word (checked when read).

/// An enum stored as one lowercase word, with the serde and OpenAPI forms the API shows.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where an asset is in its life.
    AssetStatus {
        /// An upload in progress.
        Uploading = "uploading",
        /// A recording being written.
        Preparing = "preparing",
        /// Waiting for a job worker.
        Queued = "queued",
        /// Being transcoded.
        Processing = "processing",
        /// Plays.
        Ready = "ready",
        /// Failed; `error` says why.
        Errored = "errored",
    }
}

text_enum! {
    /// Where a job is in the queue.
    JobStatus {
        Queued = "queued",
        /// Leased by a worker.
        Running = "running",
        Done = "done",
        /// Out of attempts.
        Failed = "failed",
    }
}

text_enum! {
    /// Whether a live stream has a publisher.
    LiveStatus {
        Idle = "idle",
        Active = "active",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_what_they_write_and_refuse_other_words() {
        for s in [
            AssetStatus::Uploading,
            AssetStatus::Preparing,
            AssetStatus::Queued,
            AssetStatus::Processing,
            AssetStatus::Ready,
            AssetStatus::Errored,
        ] {
            assert_eq!(AssetStatus::try_from(s.as_str().to_string()), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            JobStatus::try_from("running".to_string()),
            Ok(JobStatus::Running)
        );
        assert_eq!(LiveStatus::Active.to_string(), "active");
        assert!(LiveStatus::try_from("Active".to_string()).is_err());
    }
}
