@echo off
rem Install the server into .venv and start it on the embedded defaults (http://127.0.0.1:8000):
rem what scripts/serve does, for cmd.exe on Windows.
setlocal
cd /d "%~dp0.."
if "%PYTHON%"=="" (where py >nul 2>nul && (set "PYTHON=py") || (set "PYTHON=python"))
if not exist ".venv\Scripts\python.exe" (
  %PYTHON% -m venv .venv || exit /b 1
)
".venv\Scripts\python.exe" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e . || exit /b 1
".venv\Scripts\python.exe" -m app serve %*
exit /b %ERRORLEVEL%
