//! A response body: whole, or streamed from the history a piece at a time.
//! A heavy render's place ([`super::HEAVY_RENDERS`]) goes with its body,
//! given back when the body is sent or dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::history::Samples;

/// What HTTP answers with.
#[derive(Debug)]
pub struct Body {
    content: Content,
    _place: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum Content {
    Whole(Option<Bytes>),
    Streamed(Box<Samples>),
}

impl Body {
    pub fn whole(text: String) -> Body {
        Body {
            content: Content::Whole(Some(Bytes::from(text))),
            _place: None,
        }
    }

    pub(super) fn streamed(samples: Samples) -> Body {
        Body {
            content: Content::Streamed(Box::new(samples)),
            _place: None,
        }
    }
}

/// A response that holds a heavy render's place until its body is gone.
pub(super) trait Holding {
    fn holding(self, place: OwnedSemaphorePermit) -> Self;
}

impl Holding for hyper::Response<Body> {
    fn holding(mut self, place: OwnedSemaphorePermit) -> Self {
        self.body_mut()._place = Some(place);
        self
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    /// The next piece, made now: hyper asks for one only when it has room
    /// to send it, so a client that does not read holds one piece.
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let piece = match &mut this.content {
            Content::Whole(whole) => whole.take(),
            Content::Streamed(samples) => samples.next_piece(),
        };
        if piece.is_none() {
            this._place = None;
        }
        Poll::Ready(piece.map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.content, Content::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Whole(whole) => {
                SizeHint::with_exact(whole.as_ref().map_or(0, |b| b.len() as u64))
            }
            Content::Streamed(_) => SizeHint::default(),
        }
    }
}
