"""The shell script a run container starts with when something must happen before the engine:
connector config files written, the image's cuda-compat libraries disabled, extra PyPI
packages installed. It ends with ``exec "$@"``: the engine's command line is its arguments.

The text matches GPUStack 2.3's byte for byte, so a workload planned by either is the same.
"""

from __future__ import annotations

__all__ = ["serving_script"]

_HEAD = "#!/bin/sh\n\n#\n# Prepare\n#\n\n"

_CUDA_COMPAT = """if [ -d /usr/local/cuda/compat ]; then
    echo "Disabling bundled cuda-compat to run with the host driver (CUDA minor version compatibility)"
    rm -rf /usr/local/cuda/compat 2>/dev/null || true
    ldconfig 2>/dev/null || true
    if [ -d /usr/local/cuda/compat ]; then
        echo "Warning: failed to remove /usr/local/cuda/compat (needs a root container); the bundled cuda-compat may still be used"
    fi
fi

"""

_PACKAGES_AND_EXEC = """if [ -n "${PYPI_PACKAGES_INSTALL:-}" ]; then
    if command -v uv >/dev/null 2>&1; then
        echo "Installing additional PyPi packages: ${PYPI_PACKAGES_INSTALL}"
        export UV_HTTP_TIMEOUT=500
        export UV_NO_CACHE=1
        if [ -n "${PIP_INDEX_URL:-}" ]; then
            export UV_DEFAULT_INDEX="${PIP_INDEX_URL}"
            export UV_INDEX_URL="${PIP_INDEX_URL}"
        fi
        if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then
            export UV_INDEX="${PIP_EXTRA_INDEX_URL}"
            export UV_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL}"
        fi
        uv pip install --system ${PYPI_PACKAGES_INSTALL}
        uv pip tree --system
    elif command -v pip >/dev/null 2>&1; then
        echo "Installing additional PyPi packages: ${PYPI_PACKAGES_INSTALL}"
        export PIP_DISABLE_PIP_VERSION_CHECK=1
        export PIP_ROOT_USER_ACTION=ignore
        export PIP_TIMEOUT=500
        export PIP_NO_CACHE_DIR=1
        pip install ${PYPI_PACKAGES_INSTALL}
        pip freeze
    fi
    unset PYPI_PACKAGES_INSTALL
fi

#
# Execute
#

exec "$@"
"""


def _write_file(path: str, content: str) -> str:
    """A step writing ``content`` verbatim (quoted heredoc: no expansion of ``$`` or backticks)."""
    return (
        f'echo "Writing connector config {path}"\n'
        f"mkdir -p \"$(dirname '{path}')\"\n"
        f"cat > '{path}' <<'GPUSTACK_CACHE_FILE_EOF'\n"
        f"{content}\n"
        "GPUSTACK_CACHE_FILE_EOF\n\n"
    )


def serving_script(files: dict[str, str], *, disable_cuda_compat: bool) -> str:
    """The script: files written (sorted by path), cuda-compat disabled if asked, packages
    from ``PYPI_PACKAGES_INSTALL`` installed when set at run time, then the engine."""
    steps = "".join(_write_file(path, content) for path, content in sorted(files.items()))
    return _HEAD + steps + (_CUDA_COMPAT if disable_cuda_compat else "") + _PACKAGES_AND_EXEC
