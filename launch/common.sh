# Shared by the launch scripts: make sure the system packages swift-distill needs are installed.
# Installs them with apt-get when run as root; otherwise prints the command to run and stops.

DISTILL_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev zlib1g-dev dataset-fashion-mnist)

# ensure_packages [EXTRA...]: the project's packages and any extra ones a script needs.
ensure_packages() {
    local missing=()
    for p in "${DISTILL_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

ensure_swift() {
    command -v swift >/dev/null 2>&1 && return 0
    echo "swift not found on PATH: install a Swift 5.9+ toolchain (https://www.swift.org/install/linux/)" >&2
    exit 1
}
