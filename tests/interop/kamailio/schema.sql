-- Tables Kamailio's sipcapture module (5.6) writes to, for SQLite (db_sqlite). Kamailio ships no
-- SQLite schema for sipcapture, so the interop tests create it. Column names are the module's
-- defaults (sipcapture.c: *_column parameters); types are loose on purpose (SQLite stores what it
-- is given), and every column has a default so a column the module leaves out never fails the
-- insert.
--
-- `date` is REAL because db_sqlite stores a time as a Julian day number, (t - 0.5) / 86400 +
-- 2440587.5 (db_sqlite's timet_to_sqlite); a TEXT column would round it to 15 digits.
CREATE TABLE sip_capture (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    date REAL NOT NULL DEFAULT 0,
    micro_ts INTEGER NOT NULL DEFAULT 0,
    method TEXT DEFAULT '',
    reply_reason TEXT DEFAULT '',
    correlation_id TEXT DEFAULT '',
    ruri TEXT DEFAULT '',
    ruri_user TEXT DEFAULT '',
    ruri_domain TEXT DEFAULT '',
    from_user TEXT DEFAULT '',
    from_domain TEXT DEFAULT '',
    from_tag TEXT DEFAULT '',
    to_user TEXT DEFAULT '',
    to_domain TEXT DEFAULT '',
    to_tag TEXT DEFAULT '',
    pid_user TEXT DEFAULT '',
    contact_user TEXT DEFAULT '',
    auth_user TEXT DEFAULT '',
    callid TEXT DEFAULT '',
    callid_aleg TEXT DEFAULT '',
    via_1 TEXT DEFAULT '',
    via_1_branch TEXT DEFAULT '',
    cseq TEXT DEFAULT '',
    diversion TEXT DEFAULT '',
    reason TEXT DEFAULT '',
    content_type TEXT DEFAULT '',
    auth TEXT DEFAULT '',
    user_agent TEXT DEFAULT '',
    source_ip TEXT DEFAULT '',
    source_port INTEGER DEFAULT 0,
    destination_ip TEXT DEFAULT '',
    destination_port INTEGER DEFAULT 0,
    contact_ip TEXT DEFAULT '',
    contact_port INTEGER DEFAULT 0,
    originator_ip TEXT DEFAULT '',
    originator_port INTEGER DEFAULT 0,
    proto INTEGER DEFAULT 0,
    family INTEGER DEFAULT 0,
    rtp_stat TEXT DEFAULT '',
    type INTEGER DEFAULT 0,
    node TEXT DEFAULT '',
    msg BLOB,
    custom_field1 TEXT DEFAULT '',
    custom_field2 TEXT DEFAULT '',
    custom_field3 TEXT DEFAULT ''
);

-- report_capture() and the built-in JSON tables (rtcp_capture, report_capture, logs_capture) share
-- one shape: the 12 columns of sipcapture.c's receive_logging_json_msg / report_capture.
CREATE TABLE report_capture (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    date REAL NOT NULL DEFAULT 0,
    micro_ts INTEGER NOT NULL DEFAULT 0,
    correlation_id TEXT DEFAULT '',
    source_ip TEXT DEFAULT '',
    source_port INTEGER DEFAULT 0,
    destination_ip TEXT DEFAULT '',
    destination_port INTEGER DEFAULT 0,
    proto INTEGER DEFAULT 0,
    family INTEGER DEFAULT 0,
    type INTEGER DEFAULT 0,
    node TEXT DEFAULT '',
    msg BLOB
);
CREATE TABLE rtcp_capture AS SELECT * FROM report_capture WHERE 0;
CREATE TABLE logs_capture AS SELECT * FROM report_capture WHERE 0;
