#!/usr/bin/env bash
# Fetch an nginx whose upstream servers take "resolve" (OSS nginx 1.27.3 or newer) for the test
# that changes what the upstream name resolves to (tests/deploy/test_resolve.py). Debian 12's
# nginx (1.22) has no "resolve"; the edge image runs a newer one (deploy/Dockerfile). This takes
# Debian's own nginx package from unstable with the libraries it was built against, unpacked
# under one folder (no package is installed, the machine's apt sources are left alone), and
# writes PREFIX/nginx, which runs it with those libraries. Does nothing if that is there.
#
#   tests/deploy/fetch_nginx.sh                  # into /opt/scalekit-test-nginx
#   SCALEKIT_TEST_NGINX_PREFIX=/dir tests/deploy/fetch_nginx.sh
set -euo pipefail

PREFIX=${SCALEKIT_TEST_NGINX_PREFIX:-/opt/scalekit-test-nginx}
if [ -x "$PREFIX/nginx" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # apt's download user must be able to write here
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb http://deb.debian.org/debian sid main" > "$work/sources.list"
apt_options=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
             -o "APT::Sandbox::User=root")
apt-get "${apt_options[@]}" update -qq
# nginx and the libraries its build links against (glibc included: they need a newer one).
(cd "$work/debs" && apt-get "${apt_options[@]}" download -qq nginx libc6 libssl3t64 libpcre2-8-0 libcrypt1 zlib1g)
mkdir -p "$PREFIX.tmp"
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$PREFIX.tmp"
done
libs="$PREFIX/usr/lib/x86_64-linux-gnu"
cat > "$PREFIX.tmp/nginx" <<SCRIPT
#!/bin/sh
# Debian unstable's nginx with its own libraries (written by tests/deploy/fetch_nginx.sh).
exec "$libs/ld-linux-x86-64.so.2" --library-path "$libs" "$PREFIX/usr/sbin/nginx" "\$@"
SCRIPT
chmod 755 "$PREFIX.tmp/nginx"
rm -rf "$PREFIX"
mv "$PREFIX.tmp" "$PREFIX"
"$PREFIX/nginx" -v
