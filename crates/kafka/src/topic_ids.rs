//! Kafka topic ids (KIP-516): what tells a topic apart from another of the same name, such as
//! one deleted and created again, or the same name on another cluster. A consumer that stores
//! its offsets outside Kafka stores the topic id beside them, so it can tell whether they still
//! belong to the log it reads.
//!
//! rust-rdkafka does not wrap librdkafka's `DescribeTopics` admin call (librdkafka ≥ 2.3), so
//! this module calls it through the bindings rust-rdkafka re-exports. It is the one place in
//! the workspace allowed `unsafe`: every pointer it touches is created and destroyed here, and
//! nothing of librdkafka's memory outlives the call (ids are copied into Rust strings).

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// A topic's id as Kafka's own tools print it (base64 of the 16-byte UUID, what
/// `kafka-topics.sh --describe` shows as `TopicId`).
pub type TopicId = String;

/// The id Kafka uses for "no topic id" (all zero bits), in base64.
pub const NO_TOPIC_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// Destroys a librdkafka object when dropped.
struct Owned<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` was returned by the librdkafka constructor matching `destroy`,
            // is owned by this guard alone and is destroyed once.
            unsafe { (self.destroy)(self.ptr) }
        }
    }
}

/// Copy a C string librdkafka owns into Rust (empty for a null pointer).
///
/// SAFETY: `ptr` is null or points to a NUL-terminated string valid for this call.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() { String::new() } else { unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned() }
}

/// The ids of those of `topics` the cluster knows (a topic it does not know is absent), asked
/// through `client`'s connections with one `DescribeTopics` request. Blocks for up to
/// `timeout`; call it from a thread that may block (a rebalance callback, `spawn_blocking`).
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> anyhow::Result<HashMap<String, TopicId>> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(*t).with_context(|| format!("topic name {t:?} holds a NUL byte")))
        .collect::<anyhow::Result<_>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    let rk = client.native_ptr();

    // SAFETY: `rk` is the live handle `client` owns for the whole call. Every object created
    // below is owned by an `Owned` guard and destroyed when the function returns; the result
    // event owns the descriptions, which are only read (and their strings copied) while the
    // event's guard lives. `pointers` and `names` outlive the call that reads them
    // (librdkafka copies the names into the collection).
    unsafe {
        let queue = Owned { ptr: rd::rd_kafka_queue_new(rk), destroy: rd::rd_kafka_queue_destroy };
        let options = Owned {
            ptr: rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS),
            destroy: rd::rd_kafka_AdminOptions_destroy,
        };
        if queue.ptr.is_null() || options.ptr.is_null() {
            bail!("librdkafka could not create a queue or admin options for DescribeTopics");
        }
        let mut errstr = [0 as c_char; 256];
        let set =
            rd::rd_kafka_AdminOptions_set_request_timeout(options.ptr, timeout_ms, errstr.as_mut_ptr(), errstr.len());
        if set != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("setting the DescribeTopics timeout: {}", text(errstr.as_ptr()));
        }
        let collection = Owned {
            ptr: rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len()),
            destroy: rd::rd_kafka_TopicCollection_destroy,
        };
        rd::rd_kafka_DescribeTopics(rk, collection.ptr, options.ptr, queue.ptr);
        // A little beyond the request timeout: librdkafka answers with a timeout error itself.
        let event = Owned {
            ptr: rd::rd_kafka_queue_poll(queue.ptr, timeout_ms.saturating_add(1000)),
            destroy: rd::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            bail!("DescribeTopics got no answer within {timeout:?}");
        }
        let code = rd::rd_kafka_event_error(event.ptr);
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("DescribeTopics failed: {} ({code:?})", text(rd::rd_kafka_event_error_string(event.ptr)));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.ptr);
        if result.is_null() {
            bail!("DescribeTopics answered with an event of another kind");
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut ids = HashMap::with_capacity(count);
        for i in 0..count {
            let description = *descriptions.add(i);
            let name = text(rd::rd_kafka_TopicDescription_name(description));
            let error = rd::rd_kafka_TopicDescription_error(description);
            if !error.is_null() {
                match rd::rd_kafka_error_code(error) {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {}
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => continue,
                    other => bail!(
                        "DescribeTopics refused topic {name}: {} ({other:?})",
                        text(rd::rd_kafka_error_string(error))
                    ),
                }
            }
            let uuid = rd::rd_kafka_TopicDescription_topic_id(description);
            if uuid.is_null() {
                continue;
            }
            let id = text(rd::rd_kafka_Uuid_base64str(uuid));
            if !id.is_empty() && id != NO_TOPIC_ID {
                ids.insert(name, id);
            }
        }
        Ok(ids)
    }
}
