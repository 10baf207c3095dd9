# scalekit edge cache for Varnish 7 with vmod_xkey (Debian: varnish + varnish-modules).
#
# Where it stands (deploy/docker-compose.prod.yml): nginx (TLS, static files, forwarded-header
# rules, gzip) -> Varnish :6081 (this cache) -> nginx :8080 (balances over the app replicas)
# -> the app. In Kubernetes: ingress-nginx -> Varnish -> the app's Service.
#
# Pages are stored as the app's Cache-Control says (s-maxage, max-age, Expires; never private,
# no-store or Set-Cookie responses: Varnish's built-in rules) and tagged with the app's xkey
# header (cdn.surrogate_keys = "varnish"). scalekit purges them on every invalidation (cdn.purge
# with a varnish target): PURGE with "xkey-purge: tag1 tag2" (or "xkey-softpurge") drops every
# object carrying one of the tags; PURGE of a URL drops that URL, every variant of it.
#
# Two listen addresses, started as:  varnishd -a :6081 -a purge=:6091 -f default.vcl ...
#   :6081   traffic from the load balancer in front; never accepts PURGE.
#   :6091   purges only ("purge" socket), from the addresses in acl purgers: the app fleet.
# Keep 6091 off any public network. Tested by tests/edge/test_varnish.py and, in the shipped
# stack, by tests/deploy (both with only the backend's address adapted).

vcl 4.1;

import std;
import xkey;

# The app fleet, behind the load balancer's internal port: nginx balances over the replicas and
# follows their addresses as they change (a Varnish backend is one address).
backend fleet {
    .host = "nginx";
    .port = "8080";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 30s;
}

# Who may purge, on the purge socket: loopback and private networks (the fleet's containers or
# pods). Narrow it to your app's network if others share it.
acl purgers {
    "127.0.0.1";
    "::1";
    "10.0.0.0"/8;
    "172.16.0.0"/12;
    "192.168.0.0"/16;
    "fc00::"/7;
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (local.socket != "purge" || client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.n-gone = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.n-gone));
        }
        if (req.http.xkey-softpurge) {
            set req.http.n-gone = xkey.softpurge(req.http.xkey-softpurge);
            return (synth(200, "Soft-purged " + req.http.n-gone));
        }
        return (purge);    # this URL (scheme, host, path and query), every variant
    }
    if (local.socket == "purge") {
        return (synth(403, "Purges only"));
    }
    unset req.http.X-Edge-Pass;
    # A WebSocket upgrade is a connection, not a response to cache: piped to the fleet as is.
    if (req.http.Upgrade ~ "(?i)^websocket$") {
        return (pipe);
    }

    # The load balancer in front established who the client is (X-Real-IP): the app gets that
    # one address, not a chain with the load balancer's own appended.
    if (req.http.X-Real-IP) {
        set req.http.X-Forwarded-For = req.http.X-Real-IP;
    }
    # The scheme is the load balancer's word (nginx replaces the client's); plain http when
    # Varnish is reached directly. It is part of the key, as in the app's.
    if (!req.http.X-Forwarded-Proto) {
        set req.http.X-Forwarded-Proto = "http";
    }
    # One entry per page whatever the order of its query parameters, and tracking parameters
    # never make a new one (the app's key drops the same: cache.ignored_query_params).
    set req.url = regsuball(req.url, "(?<=[?&])(utm_[a-z_]+|fbclid|gclid|msclkid|mc_cid|mc_eid)=[^&]*(&|$)", "");
    set req.url = regsub(req.url, "[?&]$", "");
    set req.url = std.querysort(req.url);

    if (req.method != "GET" && req.method != "HEAD") {
        set req.http.X-Edge-Pass = "method";
        return (pass);
    }
    # Credentials and logged-in sessions go to the app (its tiers key and tag per user where
    # needed) and never wait behind another request. List your app's session cookie names here.
    if (req.http.Authorization || req.http.Cookie ~ "(^|;\s*)(session|sessionid)=") {
        set req.http.X-Edge-Pass = "credentials";
        return (pass);
    }
    # Analytics cookies never change a page: they are dropped here, so they neither reach the
    # app nor make its answer private (scalekit's CDN layer makes a rule-stamped answer to a
    # request with any Cookie private). Add your own such cookie names to the pattern.
    if (req.http.Cookie) {
        set req.http.Cookie = regsuball(req.http.Cookie,
            "(^|;\s*)(_ga[^=]*|_gid|_gat[^=]*|_fbp|_fbc|__utm[a-z]+|_hj[^=]*)=[^;]*", "");
        set req.http.Cookie = regsub(req.http.Cookie, "^;\s*", "");
        if (req.http.Cookie ~ "^\s*$") {
            unset req.http.Cookie;
        }
    }
    # Other cookies reach the app, whose answer says whether it may be shared (a rule-stamped
    # lifetime never is, for a request with cookies; the app's own public / s-maxage is).
    # Concurrent misses for one page wait for the one request that fetches it.
    return (hash);
}

sub vcl_pipe {
    # Varnish pipes with "Connection: close" unless told otherwise: the upgrade must reach the app.
    if (req.http.Upgrade) {
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }
    return (pipe);
}

sub vcl_hash {
    hash_data(req.http.X-Forwarded-Proto);
    hash_data(req.http.host);
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # A refresh of a stale page that failed: keep serving the stale copy (the one below).
    if (bereq.is_bgfetch && beresp.status >= 500) {
        return (abandon);
    }
    # Past its lifetime a page is kept an hour: served stale while one request refreshes it in
    # the background, and while the fleet cannot answer. A purge removes it at once all the same.
    # Varnish's built-in rules then refuse Set-Cookie, private, no-store and no-cache
    # responses, and take the lifetime from s-maxage / max-age / Expires.
    set beresp.grace = 1h;
}

sub vcl_deliver {
    # The tags are for this cache only.
    unset resp.http.xkey;
    if (req.http.X-Edge-Pass) {
        set resp.http.X-Cache-Status = "BYPASS";
    } else if (obj.hits > 0 && obj.ttl <= 0s) {
        set resp.http.X-Cache-Status = "STALE";
    } else if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}
