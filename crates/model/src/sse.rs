//! Server-sent events, decoded in one pass over the bytes however they are cut into chunks.
//!
//! Written here rather than taken from `eventsource-stream`, whose parser reads a line it has not seen
//! the end of again from its start each time another chunk of it arrives: a tool call whose arguments
//! come in one big event then costs time in the square of its size (16 MiB arriving in 16 KiB chunks:
//! 6 s). Here each byte is searched once for a line end, copied at most once while its line is still
//! incomplete, and once more into the event's data.
//!
//! The decoder holds only the incomplete line and the event being read; how much it may be fed in
//! all is the caller's bound ([`crate::ClientConfig::max_reply_bytes`]).

/// One event: its type (`message` when the stream named none) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub event: String,
    pub data: String,
}

/// The bytes of an event stream, turned into [`Event`]s as lines complete (the WHATWG
/// `text/event-stream` rules: lines end in LF, CR or CRLF; a blank line ends an event; `:` starts a
/// comment; fields other than `event` and `data` are ignored, since nothing here reconnects).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Bytes received and not yet taken as lines, from `start` on.
    buffer: Vec<u8>,
    start: usize,
    /// Where to go on looking for the end of the line that begins at `start`: everything before it
    /// was searched already, which is what keeps a long line from being searched again per chunk.
    searched: usize,
    /// The last line ended in CR, so an LF right after it is the rest of that line end.
    after_cr: bool,
    /// Whether a line was read yet (a byte order mark may open the first one).
    started: bool,
    event: String,
    data: String,
}

impl Decoder {
    /// Adds bytes as they came off the wire.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        // Lines already taken are dropped here, once per chunk rather than once per line, so a chunk
        // of many small events does not move its tail forward once for each of them.
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.searched -= self.start;
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in what was fed so far; `Ok(None)` until more bytes complete one.
    /// An event the stream ends in the middle of is never returned, as the standard says.
    pub(crate) fn next_event(&mut self) -> Result<Option<Event>, String> {
        while let Some((from, to)) = self.next_line() {
            let line = std::str::from_utf8(&self.buffer[from..to])
                .map_err(|e| format!("the event stream is not UTF-8 text ({e})"))?;
            let line = if self.started {
                line
            } else {
                self.started = true;
                line.strip_prefix('\u{feff}').unwrap_or(line)
            };
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                if self.data.is_empty() {
                    continue;
                }
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the `\n` after the last data line
                let event = if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                };
                return Ok(Some(Event { event, data }));
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "event" => self.event = value.to_string(),
                _ => {} // id, retry and unknown fields
            }
        }
        Ok(None)
    }

    /// The byte range of the next complete line (without its line end), taken off the buffer.
    fn next_line(&mut self) -> Option<(usize, usize)> {
        if self.after_cr {
            match self.buffer.get(self.start) {
                None => return None,
                Some(b'\n') => {
                    self.start += 1;
                    self.searched = self.searched.max(self.start);
                }
                Some(_) => {}
            }
            self.after_cr = false;
        }
        let from = self.searched.max(self.start);
        let Some(offset) = self.buffer[from..].iter().position(|&b| b == b'\n' || b == b'\r') else {
            self.searched = self.buffer.len();
            return None;
        };
        let end = from + offset;
        let line = (self.start, end);
        self.after_cr = self.buffer[end] == b'\r';
        self.start = end + 1;
        self.searched = self.start;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event in `body`, fed in pieces of `size` bytes.
    fn decode(body: &[u8], size: usize) -> Result<Vec<Event>, String> {
        let mut decoder = Decoder::default();
        let mut events = Vec::new();
        for piece in body.chunks(size.max(1)) {
            decoder.feed(piece);
            while let Some(event) = decoder.next_event()? {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn event(kind: &str, data: &str) -> Event {
        Event {
            event: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn the_same_events_however_the_bytes_are_cut() {
        let body = "\u{feff}: a comment\nevent: message_start\ndata: {\"a\": \"é\"}\n\n\
                    data: one\r\ndata:two\r\n\r\n\
                    id: 7\nretry: 10\ndata\rdata:  three\r\r\
                    event: ping\n\n\
                    data: [DONE]\n\n"
            .as_bytes();
        let expected = vec![
            event("message_start", "{\"a\": \"é\"}"),
            event("message", "one\ntwo"),
            event("message", "\n three"),
            event("message", "[DONE]"),
        ];
        for size in [1, 2, 3, 5, 7, 64, body.len()] {
            assert_eq!(decode(body, size), Ok(expected.clone()), "pieces of {size}");
        }
    }

    #[test]
    fn an_event_cut_off_by_the_end_of_the_stream_is_not_returned() {
        assert_eq!(
            decode(b"data: whole\n\ndata: half", 4),
            Ok(vec![event("message", "whole")])
        );
        assert_eq!(decode(b"data: no blank line\n", 4), Ok(Vec::new()));
    }

    #[test]
    fn a_huge_event_in_small_pieces_comes_out_whole() {
        let data = "ü".repeat(300_000);
        let body = format!("data: {data}\n\n");
        let events = decode(body.as_bytes(), 1000).unwrap_or_default();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, data);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error() {
        let error = decode(b"data: \xff\xfe\n\n", 3).expect_err("not UTF-8");
        assert!(error.contains("not UTF-8"), "{error}");
    }
}
