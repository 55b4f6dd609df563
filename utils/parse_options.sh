#!/usr/bin/env bash
# Option parsing for recipe scripts, Kaldi/ESPnet style. Source it after the option variables have
# their defaults:
#
#     stage=1
#     tasks="speech_four multi_four"
#     strict=false
#     help_message="Usage: $0 [options] <args>"
#     . utils/parse_options.sh
#
# Then `--stage 3`, `--tasks "a b"`, `--foo-bar x` (same as --foo_bar x) and `--stage=3` set the existing
# variables. An option naming an undefined variable is an error (exit 1), so typos fail loudly.
# A variable whose default is true or false only takes true or false (Kaldi convention: `--strict true`,
# never a bare `--strict`).
# `--config FILE` applies `name=value` lines (`# comments`, blank lines, optional quotes around the value);
# options given on the command line win over every config file, wherever --config appears.
# `--help`/`-h` prints "$help_message" and exits 0. Parsing stops at the first argument that is not an
# option (or after `--`); the remaining arguments stay in "$@".
#
# Sourced (not run), it shares the caller's shell: its own names start with _po_ and are unset at the end.
# Afterwards po_given lists the options that were set (command line or config), " name name ", so a script
# can tell an option asked for from its default.

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run as a program rather than sourced: explain how to use it.
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    case "${1:-}" in --help|-h) exit 0 ;; *) exit 1 ;; esac
fi

_po_die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# _po_set NAME VALUE WHERE: assign an existing option variable, checking name and boolean values.
# WHERE says where the option came from, for error messages ("option --foo", "conf/x.conf:3").
_po_set() {
    local name=$1 value=$2 where=$3
    if [[ ! ${name} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        _po_die "${where}: '${name}' is not a valid option name"
    fi
    if [ -z "${!name+set}" ]; then
        _po_die "${where}: unknown option (no variable '${name}' in this script; see --help)"
    fi
    local old=${!name}
    if [ "${old}" = true ] || [ "${old}" = false ]; then
        if [ "${value}" != true ] && [ "${value}" != false ]; then
            _po_die "${where}: expects true or false, got '${value}'"
        fi
    fi
    printf -v "${name}" '%s' "${value}"
    case "${po_given}" in *" ${name} "*) ;; *) po_given+="${name} " ;; esac
}

# _po_read_config FILE: apply its name=value lines.
_po_read_config() {
    local file=$1 line name rest value n=0
    [ -f "${file}" ] || _po_die "--config ${file}: no such file"
    [ -r "${file}" ] || _po_die "--config ${file}: not readable"
    while IFS= read -r line || [ -n "${line}" ]; do
        n=$((n + 1))
        line=${line%$'\r'}
        [[ ${line} =~ ^[[:space:]]*(#.*)?$ ]] && continue
        if [[ ! ${line} =~ ^[[:space:]]*(--)?([A-Za-z_][A-Za-z0-9_-]*)[[:space:]]*=(.*)$ ]]; then
            _po_die "${file}:${n}: expected name=value, got '${line}'"
        fi
        name=${BASH_REMATCH[2]//-/_}
        rest=${BASH_REMATCH[3]}
        # Quoted value: everything inside the quotes; only a comment may follow.
        if [[ ${rest} =~ ^[[:space:]]*\"([^\"]*)\"[[:space:]]*(#.*)?$ ]] \
            || [[ ${rest} =~ ^[[:space:]]*\'([^\']*)\'[[:space:]]*(#.*)?$ ]]; then
            value=${BASH_REMATCH[1]}
        else
            # Unquoted: as in shell, '#' starts a comment only at the start or after whitespace
            # (%% cuts the longest suffix, i.e. at the first ' #').
            value=" ${rest}"
            value=${value%%[[:space:]]#*}
            # trim surrounding whitespace
            value=${value#"${value%%[![:space:]]*}"}
            value=${value%"${value##*[![:space:]]}"}
        fi
        _po_set "${name}" "${value}" "${file}:${n}"
    done < "${file}"
}

# Pass 1: find --help and the config files among the options (each option takes one value, so values
# that look like options, e.g. `--foo -h`, are skipped), and apply the configs first.
po_given=" "
_po_args=("$@")
_po_i=0
_po_configs=()
while [ "${_po_i}" -lt "${#_po_args[@]}" ]; do
    _po_arg=${_po_args[${_po_i}]}
    case "${_po_arg}" in
        --help|-h)
            printf '%s\n' "${help_message:-Usage: ${0##*/} [options] (no help_message defined)}"
            exit 0
            ;;
        --) break ;;
        --config=*) _po_configs+=("${_po_arg#--config=}"); _po_i=$((_po_i + 1)) ;;
        --config)
            [ $((_po_i + 1)) -lt "${#_po_args[@]}" ] || _po_die "option --config needs a value"
            _po_configs+=("${_po_args[$((_po_i + 1))]}"); _po_i=$((_po_i + 2))
            ;;
        --?*=*) _po_i=$((_po_i + 1)) ;;
        --?*) _po_i=$((_po_i + 2)) ;;
        *) break ;;
    esac
done
for _po_file in ${_po_configs[@]+"${_po_configs[@]}"}; do
    _po_read_config "${_po_file}"
done

# Pass 2: the command-line options, consuming them from "$@".
while [ "$#" -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        --config=*) shift ;;
        --config) shift 2 ;;
        --?*=*)
            _po_name=${1%%=*}; _po_name=${_po_name#--}
            _po_set "${_po_name//-/_}" "${1#*=}" "option ${1%%=*}"
            shift
            ;;
        --?*)
            [ "$#" -ge 2 ] || _po_die "option $1 needs a value"
            _po_name=${1#--}
            _po_set "${_po_name//-/_}" "$2" "option $1"
            shift 2
            ;;
        *) break ;;
    esac
done

unset _po_args _po_i _po_arg _po_configs _po_file _po_name
unset -f _po_die _po_set _po_read_config
true
