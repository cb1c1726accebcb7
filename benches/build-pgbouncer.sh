#!/usr/bin/env bash
# Builds a PgBouncer binary from source, for the benches' PGBOUNCER_BIN (see benches/README.md).
#
#   benches/build-pgbouncer.sh SOURCE [DEST]
#
# SOURCE is one of:
#   - a source tree (a directory with configure.ac or configure, a git checkout with its
#     submodule, or an unpacked tarball), built in place (DEST is then not used);
#   - a release tarball (pgbouncer-X.Y.Z.tar.gz / .tar.xz), unpacked into DEST;
#   - a git directory (bare, or a mirror) of github.com/pgbouncer/pgbouncer, whose tag GIT_REF
#     (default pgbouncer_1_25_2) is exported into DEST. From 1.25 the tag carries lib/
#     (libusual) itself; older tags pin lib/ (and uthash/) as submodules, whose git
#     directories are then named by LIBUSUAL_GIT (github.com/libusual/libusual) and
#     SUBMODULE_GITS="uthash=DIR ..." (path=git directory pairs).
# DEST defaults to ./pgbouncer-<version of GIT_REF or the tarball's name>.
#
# Configures with `--without-cares --with-systemd=no` (no c-ares or libsystemd needed) and
# runs `make pgbouncer`; prints the binary's path and `pgbouncer --version` at the end. Needs
# a C compiler, make, libevent, OpenSSL and the autotools; BENCH_INSTALL=1 installs them with
# apt-get first.
set -euo pipefail

GIT_REF=${GIT_REF:-pgbouncer_1_25_2}
LIBUSUAL_GIT=${LIBUSUAL_GIT:-}
SUBMODULE_GITS=${SUBMODULE_GITS:-}
BENCH_INSTALL=${BENCH_INSTALL:-0}
JOBS=${JOBS:-$(nproc)}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The header comment above is the usage text.
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" >&2; exit 2; }

install_deps() {
  log "apt-get install build dependencies (BENCH_INSTALL=1)"
  apt-get install -y build-essential libevent-dev libssl-dev autoconf automake libtool \
    pkg-config >/dev/null || die "apt-get install failed"
}

# A git directory itself (what `git clone --bare` or `--mirror` makes), not a checkout.
is_git_dir() { [[ -f $1/HEAD && -d $1/objects ]] && git --git-dir="$1" rev-parse --git-dir >/dev/null 2>&1; }

# The git directory of $1: itself, or the .git of a checkout.
git_dir_of() {
  if is_git_dir "$1"; then echo "$1"; else git -C "$1" rev-parse --absolute-git-dir; fi
}

# The git directory named for submodule path $1: LIBUSUAL_GIT for lib, else SUBMODULE_GITS.
submodule_git() {
  local want=$1 pair
  if [[ $want == lib && -n $LIBUSUAL_GIT ]]; then echo "$LIBUSUAL_GIT"; return; fi
  for pair in $SUBMODULE_GITS; do
    [[ ${pair%%=*} == "$want" ]] && { echo "${pair#*=}"; return; }
  done
}

# Exports GIT_REF of the git directory $1 into $2, with every submodule it pins.
export_git() {
  local src=$1 dest=$2 gd mode type pin path sub subgd
  gd=$(git_dir_of "$src")
  git --git-dir="$gd" rev-parse --verify -q "$GIT_REF^{commit}" >/dev/null ||
    die "$src has no $GIT_REF (set GIT_REF to a tag or commit)"
  mkdir -p "$dest"
  git --git-dir="$gd" archive --format=tar "$GIT_REF" | tar -x -C "$dest"
  # git archive leaves a submodule's directory empty: fill it at the pinned commit.
  while read -r mode type pin path; do
    [[ $mode == 160000 && $type == commit ]] || continue
    sub=$(submodule_git "$path")
    [[ -n $sub ]] || die "$GIT_REF pins $path at $pin as a submodule: name its git directory" \
      "($([[ $path == lib ]] && echo "LIBUSUAL_GIT=DIR or ")SUBMODULE_GITS=\"$path=DIR\")"
    subgd=$(git_dir_of "$sub")
    git --git-dir="$subgd" rev-parse --verify -q "$pin^{commit}" >/dev/null ||
      die "$sub does not hold commit $pin (for $path)"
    mkdir -p "$dest/$path"
    git --git-dir="$subgd" archive --format=tar "$pin" | tar -x -C "$dest/$path"
    log "$path/ = $sub at $pin"
  done < <(git --git-dir="$gd" ls-tree -r "$GIT_REF")
}

# Prints the directory to build in, after unpacking SOURCE there if needed.
prepare_tree() {
  local src=$1 dest=$2
  if [[ -f $src ]]; then
    [[ -n $dest ]] || dest=$PWD/$(basename "$src" | sed -E 's/\.tar(\.[a-z0-9]+)?$//; s/\.tgz$//')
    mkdir -p "$dest"
    tar -xf "$src" -C "$dest" --strip-components=1 || die "cannot unpack $src"
  elif [[ -d $src ]] && is_git_dir "$src"; then
    [[ -n $dest ]] || dest=$PWD/pgbouncer-$(sed 's/^pgbouncer_//; s/_/./g' <<<"$GIT_REF")
    [[ ! -e $dest/configure.ac ]] || die "$dest already holds a source tree: remove it or pick another DEST"
    export_git "$src" "$dest"
  elif [[ -d $src && (-f $src/configure.ac || -f $src/configure) ]]; then
    dest=$src
  else
    die "$src is neither a PgBouncer source tree, a tarball nor a git directory"
  fi
  echo "$dest"
}

main() {
  (($# >= 1 && $# <= 2)) || usage
  [[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive integer"
  if [[ $BENCH_INSTALL == 1 ]]; then install_deps; fi
  local tree
  tree=$(prepare_tree "$1" "${2:-}")
  cd "$tree"
  [[ -f lib/mk/std-autogen.sh || -f configure ]] || die "$tree/lib is empty: libusual is missing"
  # A release tarball ships configure; a git export has to make it.
  if [[ ! -x configure ]]; then
    log "./autogen.sh in $tree"
    ./autogen.sh >autogen.log 2>&1 || { tail -n 20 autogen.log >&2; die "autogen.sh failed (autoconf, automake, libtool installed?)"; }
  fi
  log "./configure --without-cares --with-systemd=no"
  ./configure --without-cares --with-systemd=no >configure.log 2>&1 ||
    { tail -n 20 configure.log >&2; die "configure failed (libevent-dev, libssl-dev, pkg-config installed?)"; }
  log "make -j$JOBS pgbouncer"
  make -j"$JOBS" pgbouncer >make.log 2>&1 || { tail -n 30 make.log >&2; die "make pgbouncer failed"; }
  [[ -x pgbouncer ]] || die "make ran but $tree/pgbouncer is missing"
  "$tree/pgbouncer" --version >&2
  echo "$tree/pgbouncer"
}

main "$@"
