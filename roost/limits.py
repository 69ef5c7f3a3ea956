"""Every numeric limit of the daemon that is not a user setting, with unit and reason."""

# Websocket inbound (spec §1): the wire limit closes the socket with 1009 (aiohttp enforces it).
WS_MAX_MESSAGE_BYTES = 4096
# At most this many sockets per server (spec §1).
WS_MAX_SOCKETS_PER_SERVER = 30

# Per-socket outbound queue, counted in frames and bytes. Above either bound a socket skips
# console lines (and counts them); once it drains below LOW it is told how many it missed.
# The daemon ingests a burst at 150-200k lines/s when the throttle is off, in batches of
# ~5,000 lines: 65,536 frames (~0.3 s of that) lets a healthy client keep every line
# (benchmarks/fanout.py), and SOCKET_QUEUE_HIGH_BYTES bounds the memory whatever the lines.
SOCKET_QUEUE_HIGH = 65536
SOCKET_QUEUE_HIGH_BYTES = 8 * 1024 * 1024
SOCKET_QUEUE_LOW = SOCKET_QUEUE_HIGH // 4  # as websockets does
# Control frames (status, stats, jwt error, ...) are never skipped; a socket whose queue grows
# this far past HIGH is not reading at all and is closed instead.
SOCKET_CONTROL_SLACK = 512
# Bytes buffered in the kernel/transport for one socket before its writer waits.
SOCKET_WRITE_BUFFER_HIGH = 256 * 1024
# How long a writer waits for a stalled peer to drain before closing it.
SOCKET_STALL_TIMEOUT_S = 60.0

# Console log file: rotate at this size; keep this many rotated files.
CONSOLE_LOG_MAX_BYTES = 8 * 1024 * 1024
CONSOLE_LOG_KEEP = 2
# Lines kept in memory per server for `send logs` / GET logs (>= websocket_log_count).
CONSOLE_RING_LINES = 2000
# Flush console log files at least this often (seconds) so a crash loses at most this much.
CONSOLE_LOG_FLUSH_S = 0.5

# GET /api/servers/{uuid}/logs?size=N: N is capped (spec §1).
LOGS_API_MAX_LINES = 100

# Timeouts for runtime calls from the daemon (seconds).
RUNTIME_CALL_TIMEOUT_S = 15.0
# Starting may pull an image or create a container on a busy engine: the runtime bounds each
# step itself (Docker: pull 30 min, engine calls 2 min); this is only the outer backstop.
RUNTIME_START_TIMEOUT_S = 2400.0

# How often each server's data directory size is rescanned (seconds); a scan runs in a thread.
DISK_SCAN_INTERVAL_S = 60.0

# When the configuration source (a panel) is down at boot, try again this often (seconds).
SOURCE_RETRY_S = 15.0
