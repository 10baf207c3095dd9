# scalekit edge cache for Varnish 7 with vmod_xkey (Debian: varnish + varnish-modules).
#
# Pages are stored as the app's Cache-Control says (s-maxage, max-age; never private, no-store
# or Set-Cookie responses: Varnish's built-in rules) and tagged with the app's xkey header
# (cdn.surrogate_keys = "varnish"). scalekit purges them on every invalidation (cdn.purge with
# a varnish target): PURGE with "xkey-purge: tag1 tag2" (or "xkey-softpurge") drops every
# object carrying one of the tags; PURGE of a URL drops that URL (all its variants).
#
# Two listen addresses, started as:  varnishd -a :6081 -a purge=:6091 -f default.vcl ...
#   :6081   traffic from the load balancer in front (nginx); never accepts PURGE.
#   :6091   purges only ("purge" socket), from the addresses in acl purgers: the app fleet.
# Keep 6091 off any public network. Tested by tests/edge/test_varnish.py with the backend
# address adapted (and by the deploy tests as shipped in the stack).

vcl 4.1;

import std;
import xkey;

# The app fleet, behind the load balancer's internal port (nginx balances over the replicas
# and follows their addresses; a Varnish backend is one address).
backend fleet {
    .host = "nginx";
    .port = "8080";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 30s;
}

# Who may purge, on the purge socket: loopback and private networks (the fleet's pods or
# containers). Narrow it to your app's network if others share it.
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
        return (purge);    # this URL (host, path, query, scheme), every variant
    }
    if (local.socket == "purge") {
        return (synth(403, "Purges only"));
    }

    # The scheme is the load balancer's word (nginx sets it, replacing the client's); plain
    # http when Varnish is reached directly. It is part of the key, as in the app's.
    if (!req.http.X-Forwarded-Proto) {
        set req.http.X-Forwarded-Proto = "http";
    }
    # One key per page whatever the order of its query parameters, and tracking parameters
    # never make a new one (the app's key drops the same: cache.ignored_query_params).
    set req.url = regsuball(req.url, "(?<=[?&])(utm_[a-z_]+|fbclid|gclid|msclkid|mc_cid|mc_eid)=[^&]*(&|$)", "");
    set req.url = regsub(req.url, "[?&]$", "");
    set req.url = std.querysort(req.url);

    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Credentials and logged-in sessions go to the app (its tiers key and tag per user where
    # needed). List your app's session cookie names here, as in nginx.conf.
    if (req.http.Authorization || req.http.Cookie ~ "(^|;\s*)(session|sessionid)=") {
        return (pass);
    }
    # Other cookies (analytics, consent) do not keep a page out of the cache: a response that
    # depends on one must say so (Vary, private), as it must for any shared cache.
    return (hash);
}

sub vcl_hash {
    hash_data(req.http.X-Forwarded-Proto);
    hash_data(req.http.host);
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # Varnish's built-in rules then refuse Set-Cookie, private, no-store and no-cache
    # responses, and take the lifetime from s-maxage / max-age / Expires.
    # Served stale for 10 s while one request refreshes it, unless the app said otherwise
    # (stale-while-revalidate sets beresp.grace).
    if (beresp.grace < 10s) {
        set beresp.grace = 10s;
    }
}

sub vcl_deliver {
    # The tags are for this cache only.
    unset resp.http.xkey;
    if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}
