"""What mtssl shows a person, shared by the command line and the Python API: plain lines and progress displays."""
