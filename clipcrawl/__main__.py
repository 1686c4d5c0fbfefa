import sys

try:
    from clipcrawl.cli import entry
except KeyboardInterrupt:  # Ctrl-C while the CLI is still importing: the same one line
    print("clipcrawl: interrupted; rerun the same command to resume", file=sys.stderr)
    sys.exit(130)

entry()
