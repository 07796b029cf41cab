#!/usr/bin/env bash
# Builds heptap's .deb and .rpm from one staged tree, with Debian's dpkg-deb and rpm's rpmbuild
# (both install from apt in seconds; cargo-deb and cargo-generate-rpm would be compiled first).
#
#   packaging/build.sh [--bin FILE] [--out DIR] [deb] [rpm]
#
#   --bin FILE  the heptap binary to package (default: ${CARGO_TARGET_DIR:-target}/release/heptap,
#               built with `cargo build --release -p heptap --bin heptap` when missing)
#   --out DIR   where the packages go (default: ${CARGO_TARGET_DIR:-target}/packages)
#   deb / rpm   which packages (default: both)
#
# Needs: dpkg-deb (dpkg), dpkg-shlibdeps (dpkg-dev, optional), rpmbuild (rpm), strip, gzip.
# Prints the path of each package built, one a line, last.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin=""
out="$target/packages"
kinds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        deb|rpm) kinds+=("$1"); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ ${#kinds[@]} -gt 0 ] || kinds=(deb rpm)

if [ -z "$bin" ]; then
    bin="$target/release/heptap"
    if [ ! -x "$bin" ]; then
        echo "== cargo build --release -p heptap --bin heptap" >&2
        (cd "$root" && cargo build --release -p heptap --bin heptap)
    fi
fi
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable" >&2; exit 1; }

# The version is the binary's own (`heptap --version` prints the crate version).
version="$("$bin" --version | awk '{print $2}')"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "build.sh: bad version '$version'" >&2; exit 1; }
release="${HEPTAP_PKG_RELEASE:-1}"
maintainer="${HEPTAP_PKG_MAINTAINER:-heptap developers <heptap@example.invalid>}"
homepage="$(sed -n 's/^repository *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
# Reproducible dates: the last commit's, unless SOURCE_DATE_EPOCH says otherwise.
: "${SOURCE_DATE_EPOCH:=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

fill() { # fill TEMPLATE > FILE: replaces @KEY@ from the variables below
    sed -e "s|@VERSION@|$version|g" -e "s|@RELEASE@|$release|g" \
        -e "s|@MAINTAINER@|$maintainer|g" -e "s|@HOMEPAGE@|$homepage|g" \
        -e "s|@YEAR@|$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)|g" \
        -e "s|@RPM_DATE@|$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')|g" \
        -e "s|@DEB_ARCH@|${deb_arch:-}|g" -e "s|@INSTALLED_SIZE@|${installed_size:-}|g" \
        -e "s|@SHLIBS@|${shlibs:-}|g" -e "s|@STAGE@|${stage:-}|g" "$1"
}

gz() { gzip -9n --stdout "$1" > "$2"; chmod 0644 "$2"; }

# stage DIR UNITDIR: the files both packages carry. The binary is stripped as dh_strip does.
stage_common() {
    local dir="$1" unitdir="$2"
    install -d -m 0755 "$dir/usr/bin" "$dir/etc/heptap" "$dir$unitdir" "$dir/usr/lib/sysusers.d" \
        "$dir/usr/share/man/man1" "$dir/usr/share/doc/heptap"
    install -m 0755 "$bin" "$dir/usr/bin/heptap"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$dir/usr/bin/heptap"
    install -m 0644 "$here/heptap.toml" "$dir/etc/heptap/heptap.toml"
    install -m 0644 "$here/heptap.service" "$dir$unitdir/heptap.service"
    install -m 0644 "$here/heptap.sysusers" "$dir/usr/lib/sysusers.d/heptap.conf"
    gz "$here/heptap.1" "$dir/usr/share/man/man1/heptap.1.gz"
    gz "$root/README.md" "$dir/usr/share/doc/heptap/README.md.gz"
    # Every page of docs/ (the README links them all), and the two reports beside the README.
    local doc
    for doc in "$root"/docs/*.md "$root/RELIABILITY.md" "$root/BENCHMARKS.md"; do
        gz "$doc" "$dir/usr/share/doc/heptap/$(basename "$doc").gz"
    done
    return 0
}

build_deb() {
    local stage="$work/deb"
    # Debian 12 keeps units in /lib (merged /usr or not); lintian checks for it.
    stage_common "$stage" /lib/systemd/system
    gz /dev/stdin "$stage/usr/share/doc/heptap/changelog.Debian.gz" <<EOF
heptap ($version-$release) unstable; urgency=medium

  * Package built from the heptap source tree.

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
    fill "$here/deb/copyright.in" > "$stage/usr/share/doc/heptap/copyright"
    chmod 0644 "$stage/usr/share/doc/heptap/copyright"
    install -D -m 0644 "$here/deb/lintian-overrides" "$stage/usr/share/lintian/overrides/heptap"

    deb_arch="$(dpkg --print-architecture)"
    # Shared-library dependencies as debhelper computes them, when dpkg-dev is there.
    shlibs="libc6"
    if command -v dpkg-shlibdeps >/dev/null; then
        mkdir -p "$work/shlibs/debian"
        printf 'Source: heptap\n\nPackage: heptap\nArchitecture: any\n' > "$work/shlibs/debian/control"
        shlibs="$(cd "$work/shlibs" && dpkg-shlibdeps -O "$stage/usr/bin/heptap" 2>/dev/null |
            sed -n 's/^shlibs:Depends=//p')"
        [ -n "$shlibs" ] || shlibs="libc6"
    fi
    installed_size="$(du -k -s --apparent-size "$stage" | cut -f1)"

    install -d -m 0755 "$stage/DEBIAN"
    fill "$here/deb/control.in" > "$stage/DEBIAN/control"
    install -m 0644 "$here/deb/conffiles" "$stage/DEBIAN/conffiles"
    for s in postinst prerm postrm; do install -m 0755 "$here/deb/$s" "$stage/DEBIAN/$s"; done
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -print0 |
        sort -z | xargs -0 md5sum | sed 's| \./| |' > DEBIAN/md5sums)
    chmod 0644 "$stage/DEBIAN/md5sums"

    local deb="$out/heptap_${version}-${release}_${deb_arch}.deb"
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
    echo "$deb"
}

build_rpm() {
    stage="$work/rpm-root"
    stage_common "$stage" /usr/lib/systemd/system
    install -d -m 0755 "$stage/usr/share/licenses/heptap"
    install -m 0644 /usr/share/common-licenses/Apache-2.0 "$stage/usr/share/licenses/heptap/LICENSE"
    local top="$work/rpmbuild" arch
    arch="$(uname -m)"
    mkdir -p "$top/SPECS" "$top/RPMS"
    fill "$here/rpm/heptap.spec.in" > "$top/SPECS/heptap.spec"
    rpmbuild --quiet -bb --nodeps --target "$arch" \
        --define "_topdir $top" \
        --define "_unitdir /usr/lib/systemd/system" \
        --define "__os_install_post %{nil}" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_date_epoch 1" \
        "$top/SPECS/heptap.spec" >&2
    local rpm
    rpm="$(find "$top/RPMS" -name 'heptap-*.rpm' | head -n1)"
    [ -n "$rpm" ] || { echo "build.sh: rpmbuild made no package" >&2; exit 1; }
    cp "$rpm" "$out/"
    echo "$out/$(basename "$rpm")"
}

for k in "${kinds[@]}"; do
    case "$k" in
        deb) build_deb ;;
        rpm) build_rpm ;;
    esac
done
