#!/usr/bin/env python3
"""Instructions per delivery by area, from a callgrind file of the server
(docs/bench/profile.sh). Each area is an inclusive count of the functions
named below, minus what it calls that another area counts.

Usage: callgrind-areas.py CALLGRIND_FILE DELIVERIES
"""
import os, re, subprocess, sys
cg,sent=sys.argv[1],int(sys.argv[2])
out=subprocess.run(['callgrind_annotate','--inclusive=yes','--threshold=100','--auto=no',cg],capture_output=True,text=True,cwd=os.path.dirname(os.path.abspath(cg))).stdout
inc={}
total=None
for line in out.splitlines():
    m=re.match(r'^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$',line)
    if not m: continue
    n=int(m.group(1).replace(',',''))
    rest=m.group(2)
    if rest.startswith('PROGRAM TOTALS'): total=n; continue
    mm=re.match(r'^(\S*?):(.*) \[(\S+)\]$',rest)
    if not mm: continue
    fn=mm.group(2)
    inc[fn]=max(inc.get(fn,0),n)
    # Also by file, for functions that only their file tells apart.
    inc[mm.group(1)+':'+fn]=max(inc.get(mm.group(1)+':'+fn,0),n)
def g(pat):
    r=re.compile(pat); v=[n for f,n in inc.items() if r.search(f)]
    return max(v) if v else 0
conn=g(r'^axum::serve::handle_connection::\{\{closure\}\}::\{\{closure\}\}$')
mw=g(r'^<axum::middleware::from_fn::FromFn<F,S,I,\(T1,\)> as tower_service::Service<.*>>::call::\{\{closure\}\}$')
handler=g(r'^<F as axum::handler::Handler<\(M,T1,T2,T3\),S>>::call::\{\{closure\}\}$')
parse=g(r'^calltrail::domain::parse::parse$')
sha=g(r'^sha2::sha256::compress256$')
metrics=g(r'^calltrail::metrics::Metrics::delivery$')
sig=g(r'^calltrail::webhook::check_signature$')
commit=g(r'^calltrail::ingest::store::commit_batch::\{\{closure\}\}$')
project=g(r'^calltrail::ingest::store::project$')
# The thread sqlx-sqlite runs each connection on (SQLite only).
worker=g(r'sqlx-sqlite-[^/]*/src/connection/worker\.rs:std::sys::backtrace::__rust_begin_short_backtrace$')
step=g(r'^sqlite3_step$')
prep=g(r'^sqlite3LockAndPrepare$')
exec_=g(r'^sqlite3_exec$')
prepexec=g(r'^sqlite3_prepare_v2$')
bus=g(r'^calltrail::bus::read::\{\{closure\}\}$')
# The request's span around the rest of the middleware chain: the largest
# instrumented future between the middleware and the handler (several share
# the name).
spans=[n for f,n in inc.items()
       if f.endswith('<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll')
       and handler <= n <= mw]
tracing_=max(spans, default=handler)
rows=[
 ("HTTP: hyper/axum connection, routing, body, response", conn-mw+tracing_-handler),
 ("request id + log middleware (requests.rs)", mw-tracing_),
 ("handler: body read, content type, submit, JSON answer", handler-parse-metrics-sig),
 ("parse: JSON (serde_json::Value) + fields", parse-sha),
 ("parse: SHA-256 of the body (v1 dedupe key)", sha),
 ("signature check (no secret set)", sig),
 ("metrics", metrics),
 ("writer: dedupe + apply (Projection, pure)", project),
 ("writer: SQL building, SeaORM/sqlx glue, row decoding", commit-project),
 ("SQLite: statements (sqlite3_step)", step-(exec_-prepexec)),
 ("SQLite: BEGIN IMMEDIATE + COMMIT (WAL frames; fsync is kernel time)", exec_-prepexec),
 ("SQLite: statement preparation", prep),
 ("sqlx-sqlite worker: binding, row values, channel", worker-step-prep),
 ("bus (publish after commit)", bus),
]
acc=sum(v for _,v in rows)
rows.append(("other (tokio scheduler, I/O driver, wakeups, ...)", total-acc))
def batches():
    """Calls of Projection::new: one per committed batch."""
    names, cfn, n = {}, None, 0
    for line in open(cg):
        m = re.match(r'^(c?fn)=\((\d+)\)(?: (.*))?', line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3).strip()
            if m.group(1) == 'cfn':
                cfn = m.group(2)
            continue
        m = re.match(r'^calls=(\d+)', line)
        if m and names.get(cfn, '').endswith('Projection::new'):
            n += int(m.group(1))
    return n
b = batches()
print(f"total {total:,} instructions, {sent} deliveries in {b} batches (mean {sent/max(b,1):.1f}): {total/sent:,.0f} per delivery")
for name,v in rows:
    print(f"| {name} | {v/sent/1000:,.1f}k |")
