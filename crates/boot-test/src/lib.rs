//! Boots media in QEMU (SeaBIOS/OVMF, CD/USB) and reads the serial console.
