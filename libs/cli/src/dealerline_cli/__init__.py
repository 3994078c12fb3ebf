"""dealerline's operator command: the fleet launcher (:mod:`dealerline_cli.fleet`) and
``make run`` (:mod:`dealerline_cli.run`)."""
