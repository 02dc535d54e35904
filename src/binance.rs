//! Binance's published vocabulary, defined once: the error codes (with the
//! names Binance's errors.md gives them), the messages several places
//! share, and the rate-limit header names.
//!
//! Nothing here decides anything; the layers above pick the code and the
//! HTTP status. Codes the engine produces stay in `tradsys_engine`.

/// -1000 UNKNOWN: an unknown error, or a request that could not be read.
pub(crate) const UNKNOWN: i32 = -1000;
/// -1001 DISCONNECTED: internal error; the request may be retried.
pub(crate) const DISCONNECTED: i32 = -1001;
/// -1002 UNAUTHORIZED.
pub(crate) const UNAUTHORIZED: i32 = -1002;
/// -1003 TOO_MANY_REQUESTS: an IP or connection limit.
pub(crate) const TOO_MANY_REQUESTS: i32 = -1003;
/// -1007 TIMEOUT.
pub(crate) const TIMEOUT: i32 = -1007;
/// -1008 SERVER_BUSY.
pub(crate) const SERVER_BUSY: i32 = -1008;
/// -1015 TOO_MANY_ORDERS.
pub(crate) const TOO_MANY_ORDERS: i32 = -1015;
/// -1016 SERVICE_SHUTTING_DOWN (also while starting).
pub(crate) const SERVICE_SHUTTING_DOWN: i32 = -1016;
/// -1020 UNSUPPORTED_OPERATION: unknown paths and methods.
pub(crate) const UNSUPPORTED_OPERATION: i32 = -1020;
/// -1021 INVALID_TIMESTAMP.
pub(crate) const INVALID_TIMESTAMP: i32 = -1021;
/// -1022 INVALID_SIGNATURE.
pub(crate) const INVALID_SIGNATURE: i32 = -1022;
/// -1100 ILLEGAL_CHARS.
pub(crate) const ILLEGAL_CHARS: i32 = -1100;
/// -1101 TOO_MANY_PARAMETERS.
pub(crate) const TOO_MANY_PARAMETERS: i32 = -1101;
/// -1102 MANDATORY_PARAM_EMPTY_OR_MALFORMED.
pub(crate) const MANDATORY_PARAM_EMPTY_OR_MALFORMED: i32 = -1102;
/// -1106 PARAM_NOT_REQUIRED.
pub(crate) const PARAM_NOT_REQUIRED: i32 = -1106;
/// -1115 INVALID_TIME_IN_FORCE.
pub(crate) const INVALID_TIME_IN_FORCE: i32 = -1115;
/// -1116 INVALID_ORDER_TYPE.
pub(crate) const INVALID_ORDER_TYPE: i32 = -1116;
/// -1117 INVALID_SIDE.
pub(crate) const INVALID_SIDE: i32 = -1117;
/// -1120 BAD_INTERVAL.
pub(crate) const BAD_INTERVAL: i32 = -1120;
/// -1121 BAD_SYMBOL.
pub(crate) const BAD_SYMBOL: i32 = -1121;
/// -1125 INVALID_LISTEN_KEY.
pub(crate) const INVALID_LISTEN_KEY: i32 = -1125;
/// -1127 MORE_THAN_XX_HOURS: a time range too long.
pub(crate) const MORE_THAN_XX_HOURS: i32 = -1127;
/// -1128 OPTIONAL_PARAMS_BAD_COMBO.
pub(crate) const OPTIONAL_PARAMS_BAD_COMBO: i32 = -1128;
/// -1131 BAD_RECV_WINDOW.
pub(crate) const BAD_RECV_WINDOW: i32 = -1131;
/// -1130 INVALID_PARAMETER: "Data sent for parameter '%s' is not valid."
pub(crate) const INVALID_PARAMETER: i32 = -1130;
/// -1135 INVALID_JSON: a WebSocket API frame or parameter that is not
/// valid JSON.
pub(crate) const INVALID_JSON: i32 = -1135;
/// -1191 TOO_MANY_SUBSCRIPTIONS: a session at its subscription limit.
pub(crate) const TOO_MANY_SUBSCRIPTIONS: i32 = -1191;
/// -1139 INVALID_TICKER_TYPE: a ticker `type` other than FULL or MINI.
pub(crate) const INVALID_TICKER_TYPE: i32 = -1139;
/// -2035 SUBSCRIPTION_ACTIVE: the user data stream is subscribed already.
pub(crate) const SUBSCRIPTION_ACTIVE: i32 = -2035;
/// -2036 SUBSCRIPTION_INACTIVE: no such user data stream subscription.
pub(crate) const SUBSCRIPTION_INACTIVE: i32 = -2036;
/// -2042 MAXIMUM_SUBSCRIPTION_IDS: a session used all its subscription ids.
pub(crate) const MAXIMUM_SUBSCRIPTION_IDS: i32 = -2042;
/// -1034 TOO_MANY_CONNECTIONS: connection attempts over the limit.
pub(crate) const TOO_MANY_CONNECTIONS: i32 = -1034;
/// -2010 NEW_ORDER_REJECTED.
pub(crate) const NEW_ORDER_REJECTED: i32 = -2010;
/// -2013 NO_SUCH_ORDER: also an unknown export.
pub(crate) const NO_SUCH_ORDER: i32 = -2013;
/// -2014 BAD_API_KEY_FMT.
pub(crate) const BAD_API_KEY_FMT: i32 = -2014;
/// -2015 REJECTED_MBX_KEY.
pub(crate) const REJECTED_MBX_KEY: i32 = -2015;

/// The codes of a request refused for its API key or signature: each is a
/// strike towards a ban of the client's IP (`limits::Bans`).
pub(crate) const AUTH_FAILURES: [i32; 3] = [BAD_API_KEY_FMT, REJECTED_MBX_KEY, INVALID_SIGNATURE];
/// -2021 Order cancel-replace partially failed.
pub(crate) const CANCEL_REPLACE_PARTIALLY_FAILED: i32 = -2021;
/// -2022 Order cancel-replace failed.
pub(crate) const CANCEL_REPLACE_FAILED: i32 = -2022;

/// The message of -1001 when another shard could not answer.
pub(crate) const MSG_INTERNAL: &str = "Internal error; unable to process your request. Please try again.";
/// The message of -1008 while the journal's disk is full.
pub(crate) const MSG_JOURNAL_FULL: &str =
    "The server's journal disk is full: orders, cancels and other changes are refused until space returns; reads keep working.";

/// The message of -1008 when the server sheds load.
pub(crate) const MSG_SERVER_BUSY: &str =
    "Server is currently overloaded with other requests. Please try again in a few minutes.";
/// The message of -2015.
pub(crate) const MSG_REJECTED_KEY: &str = "Invalid API-key, IP, or permissions for action.";
/// The message of -1121.
pub(crate) const MSG_BAD_SYMBOL: &str = "Invalid symbol.";
/// The message of -1128.
pub(crate) const MSG_BAD_COMBINATION: &str = "Combination of optional parameters invalid.";

/// This IP's request weight in the current minute.
pub(crate) const HEADER_USED_WEIGHT_1M: &str = "X-MBX-USED-WEIGHT-1M";
/// This account's unfilled orders in the current 10 seconds.
pub(crate) const HEADER_ORDER_COUNT_10S: &str = "X-MBX-ORDER-COUNT-10S";
/// This account's unfilled orders in the current day (UTC).
pub(crate) const HEADER_ORDER_COUNT_1D: &str = "X-MBX-ORDER-COUNT-1D";
