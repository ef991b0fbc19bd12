"""
Start a command the way systemd socket activation does: bind a listening
socket, put it at descriptor 3, set LISTEN_FDS, LISTEN_PID (this process's
pid, which the command keeps through exec) and LISTEN_FDNAMES, then exec.

    python systemd_launcher.py NAME HOST PORT COMMAND...
"""

import os
import socket
import sys

name, host, port, *command = sys.argv[1:]
listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listening.bind((host, int(port)))
listening.listen(128)
if listening.fileno() == 3:
    listening.detach()
else:
    os.dup2(listening.fileno(), 3)
    listening.close()
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=name)
os.execv(command[0], command)
