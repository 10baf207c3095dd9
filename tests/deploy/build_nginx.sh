#!/usr/bin/env bash
# Build an nginx whose upstream servers take "resolve" (OSS nginx 1.27.3 or newer), for the test
# that changes what the upstream name resolves to (tests/deploy/test_resolve.py). Debian 12's
# nginx (1.22) has no "resolve": the deploy image runs a newer one (deploy/Dockerfile), and this
# builds the same feature from Debian's own source package (unstable), with only the modules the
# shipped config uses. Idempotent: does nothing when the binary is already there.
#
#   tests/deploy/build_nginx.sh            # installs into /opt/scalekit-test-nginx
#   SCALEKIT_TEST_NGINX_PREFIX=/somewhere tests/deploy/build_nginx.sh
set -euo pipefail

PREFIX=${SCALEKIT_TEST_NGINX_PREFIX:-/opt/scalekit-test-nginx}
if [ -x "$PREFIX/sbin/nginx" ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for package in libpcre2-dev zlib1g-dev make gcc; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private apt state: the machine's sources and lists stay as they are.
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
echo "deb-src http://deb.debian.org/debian sid main" > "$work/apt/sources.list"
apt_options=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")
apt-get "${apt_options[@]}" update -qq
(cd "$work" && apt-get "${apt_options[@]}" source --download-only -qq nginx >/dev/null)
tarball=$(ls "$work"/nginx_*.orig.tar.gz | head -n 1)
mkdir "$work/src"
tar -xzf "$tarball" -C "$work/src" --strip-components=1
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$work/src/src/core/nginx.h")
echo "build_nginx: nginx $version into $PREFIX"
(cd "$work/src" && ./configure --prefix="$PREFIX" --with-pcre --with-http_realip_module \
   --with-http_gzip_static_module --without-http_fastcgi_module --without-http_uwsgi_module \
   --without-http_scgi_module --without-mail_pop3_module --without-mail_imap_module \
   --without-mail_smtp_module >/dev/null && make -j"$(nproc)" >/dev/null && $SUDO make install >/dev/null)
"$PREFIX/sbin/nginx" -v
