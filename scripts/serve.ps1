# Install the server into .venv and start it on the embedded defaults (http://127.0.0.1:8000):
# what scripts/serve does, for PowerShell on Windows (and macOS or Linux with pwsh).
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
$python = if ($env:PYTHON) { $env:PYTHON } elseif (Get-Command py -ErrorAction SilentlyContinue) { "py" } else { "python" }
$venvPython = if ($IsWindows -or $env:OS -eq "Windows_NT") { ".venv\Scripts\python.exe" } else { ".venv/bin/python" }
if (-not (Test-Path $venvPython)) { & $python -m venv .venv; if ($LASTEXITCODE) { exit $LASTEXITCODE } }
& $venvPython -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
if ($LASTEXITCODE) { exit $LASTEXITCODE }
& $venvPython -m app serve @args
exit $LASTEXITCODE
