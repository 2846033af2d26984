"""pymulproc's message protocol: ``[request, sender_pid, recipient_pid, data]``."""

PARENT_COMM_INTERFACE = 1
CHILD_COMM_INTERFACE = 2

#: Do a task (mulproc request code 1, ``Request::DO``).
REQ_DO = "DO"
#: A task is done (mulproc request code 2, ``Request::FINISHED``).
REQ_FINISHED = "FINISHED"
#: Stop as soon as possible: the poison pill (code 3, ``Request::DIE``).
REQ_DIE = "DIE"
#: Test requests, sent as named requests (see ``mulproc.pymulproc._codec``).
REQ_TEST_PARENT = "I'M PARENT PROCESS"
REQ_TEST_CHILD = "I'M CHILD PROCESS"

#: Offset of the sender's pid in a message (the request is at 0).
S_PID_OFFSET = 1
#: Offset of the recipient's pid (the data follows at ``R_PID_OFFSET + 1``).
R_PID_OFFSET = S_PID_OFFSET + 1
