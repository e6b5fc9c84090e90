# Prints the matches zsh's completion system offers for a command line, one per line, as an
# interactive zsh would at <TAB>: the line is typed into a real interactive zsh on a pty
# (zsh/zpty), with compinit loading the completion functions from DIR, and `compadd` wrapped
# so every match the completion functions add is also printed (calls that only collect into
# arrays, -O/-A/-D, pass through untouched).
#
# Usage: zsh -f complete.zsh DIR 'origin-audit fix --emit '     (tests/package.rs runs it
# under `timeout`; every read below waits for a marker the inner shell prints.)
#
# The line is sent only once the line editor runs (zsh enables bracketed paste, ESC[?2004h,
# when it starts reading a line): typed earlier, the terminal's line discipline would take the
# ^U that clears the line, and the TAB would never reach the completion widget.
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'compadd() { local a; for a in "$@"; do [[ $a == (-|--) ]] && break; [[ $a == -[^-]#[OAD]* ]] && { builtin compadd "$@"; return }; done; local -a __m; builtin compadd -O __m "$@"; (( $#__m )) && print -rl -- "<"m">"${^__m}; return 0 }'
zpty -w z "bindkey '^I' complete-word; print '<''ready>'"
local out
zpty -r z out '*<ready>*'
zpty -r z out $'*\e\\[\\?2004h*'
zpty -w -n z "$2"$'\t'$'\C-u'
zpty -w z 'print "<""end>"'
integer n=0
local line
while (( n++ < 2000 )) && zpty -r z line; do
  [[ $line == *'<end>'* ]] && break
  [[ $line == *'<m>'* ]] && print -r -- ${${line#*<m>}//[$'\r\n']/}
done
zpty -d z
