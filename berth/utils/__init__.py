"""Leaf helpers with no dependency on the rest of berth: arguments, ports, env, versions, units."""

from berth.utils.args import (
    extend_args_no_exist,
    find_bool_parameter,
    find_int_parameter,
    find_parameter,
    flatten_to_argv,
    format_backend_parameters,
    has_parameter,
)
from berth.utils.env import mask_env, is_secret_name
from berth.utils.ports import is_port_free, parse_port_range
from berth.utils.units import byte_to_gib
from berth.utils.versions import compare_versions

__all__ = [
    "byte_to_gib",
    "compare_versions",
    "extend_args_no_exist",
    "find_bool_parameter",
    "find_int_parameter",
    "find_parameter",
    "flatten_to_argv",
    "format_backend_parameters",
    "has_parameter",
    "is_port_free",
    "is_secret_name",
    "mask_env",
    "parse_port_range",
]
