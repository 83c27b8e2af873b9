//! Reading Server-Sent Events, the client side of `GET /echo/stream`
//! (`echorelay echo-sync --monitor`): bytes as they arrive, in any split,
//! to whole events by the EventSource rules.

/// One Server-Sent Event, as its fields arrived.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into events (EventSource's reading rules: fields
/// `id`, `event`, `data`; comment lines start with `:`; an event ends at a
/// blank line).
#[derive(Default)]
pub struct SseParser {
    pending: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Reads `bytes` (any split of the stream) and hands every event
    /// they complete to `on_event`.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(SseEvent)) {
        self.pending.extend_from_slice(bytes);
        // Every complete line, then one drain: linear in what arrived.
        let mut start = 0;
        while let Some(len) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + len;
            let line = String::from_utf8_lossy(&self.pending[start..end]).into_owned();
            start = end + 1;
            self.line(line.trim_end_matches('\r'), &mut on_event);
        }
        self.pending.drain(..start);
    }

    fn line(&mut self, line: &str, on_event: &mut impl FnMut(SseEvent)) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                on_event(event);
            }
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.current.id = Some(value.to_string()),
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    /// Bytes held for an unfinished line or event (the caller bounds it).
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.current.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(parts: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for part in parts {
            parser.feed(part.as_bytes(), |e| events.push(e));
        }
        events
    }

    #[test]
    fn events_split_anywhere_are_read_whole() {
        let events = events_of(&[
            "retry: 2000\n: a comment\n\nid: 7\nev",
            "ent: change\ndata: {\"a\":",
            "1}\n\n: heartbeat\n\nid: 8\r\ndata: x\r\ndata: y\r\n\r\n",
        ]);
        assert_eq!(
            events,
            [
                SseEvent {
                    id: Some("7".into()),
                    event: "change".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("8".into()),
                    event: String::new(),
                    data: "x\ny".into()
                },
            ]
        );
    }
}
