//! A body passed on frame by frame while the proxy keeps a copy of its data for the
//! mirror: nothing waits for the whole body before the upstream sees its first byte,
//! and the copy stops growing at a limit (a larger body is still passed on whole; only
//! its copy is given up).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

/// What a [`Tee`] hands over when its body ends.
pub enum Copied {
    /// The whole body.
    Whole(Bytes),
    /// The body grew past the copy limit.
    TooLarge,
    /// The body failed or was abandoned before its end.
    Incomplete,
}

/// Wraps `inner`, calling `done` once with the copy when the body ends (or fails, or is
/// dropped unfinished).
pub struct Tee<B> {
    inner: B,
    /// Data frames so far; usually one, so the copy is a reference count, not a memcpy.
    chunks: Vec<Bytes>,
    copied: usize,
    limit: usize,
    too_large: bool,
    done: Option<Box<dyn FnOnce(Copied) + Send>>,
}

impl<B> Tee<B> {
    pub fn new(inner: B, limit: usize, done: impl FnOnce(Copied) + Send + 'static) -> Self {
        Tee {
            inner,
            chunks: Vec::new(),
            copied: 0,
            limit,
            too_large: false,
            done: Some(Box::new(done)),
        }
    }

    fn finish(&mut self, copied: Copied) {
        if let Some(done) = self.done.take() {
            done(copied);
        }
    }

    fn whole(&mut self) -> Copied {
        if self.too_large {
            return Copied::TooLarge;
        }
        let chunks = std::mem::take(&mut self.chunks);
        Copied::Whole(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().expect("one chunk"),
            _ => {
                let mut all = BytesMut::with_capacity(self.copied);
                for chunk in chunks {
                    all.extend_from_slice(&chunk);
                }
                all.freeze()
            }
        })
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|_| !this.too_large) {
                    this.copied += data.len();
                    if this.copied > this.limit {
                        this.too_large = true;
                        this.chunks = Vec::new();
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    let whole = this.whole();
                    this.finish(whole);
                }
            }
            Poll::Ready(None) => {
                let whole = this.whole();
                this.finish(whole);
            }
            Poll::Ready(Some(Err(_))) => this.finish(Copied::Incomplete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        self.finish(Copied::Incomplete);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn chunks(
        parts: &[&'static str],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn run<B: Body<Data = Bytes> + Unpin>(body: B, limit: usize) -> (Bytes, String)
    where
        B::Error: std::fmt::Debug,
    {
        let seen = Arc::new(Mutex::new(String::new()));
        let record = seen.clone();
        let tee = Tee::new(body, limit, move |copied| {
            *record.lock().unwrap() = match copied {
                Copied::Whole(b) => String::from_utf8(b.to_vec()).unwrap(),
                Copied::TooLarge => "<too large>".into(),
                Copied::Incomplete => "<incomplete>".into(),
            };
        });
        let passed = futures_executor_block_on(tee.collect()).unwrap().to_bytes();
        let seen = seen.lock().unwrap().clone();
        (passed, seen)
    }

    fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_body_passes_whole_and_the_copy_is_kept_up_to_the_limit() {
        let (passed, copy) = run(chunks(&["ab", "cd", "e"]), 10);
        assert_eq!((&passed[..], copy.as_str()), (&b"abcde"[..], "abcde"));
        // Past the limit the body still passes whole; only the copy is given up.
        let (passed, copy) = run(chunks(&["ab", "cd", "e"]), 4);
        assert_eq!((&passed[..], copy.as_str()), (&b"abcde"[..], "<too large>"));
        let (_, copy) = run(Full::new(Bytes::from_static(b"one")), 3);
        assert_eq!(copy, "one");
    }

    #[test]
    fn an_abandoned_body_reports_an_incomplete_copy() {
        let seen = Arc::new(Mutex::new(None));
        let record = seen.clone();
        drop(Tee::new(chunks(&["ab"]), 10, move |copied| {
            *record.lock().unwrap() = Some(matches!(copied, Copied::Incomplete));
        }));
        assert_eq!(*seen.lock().unwrap(), Some(true));
    }
}
