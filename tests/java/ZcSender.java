// The Java workload of tests/tests/stacks.rs: sends a file to a loopback socket either with
// FileChannel.transferTo (sendfile: zero copy) or from a heap ByteBuffer (the JDK copies it
// into a native buffer, then write(): a CPU copy), and prints the bytes it sent.
//
//   java ZcSender transfer|heap FILE
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

public class ZcSender {
    public static void main(String[] args) throws Exception {
        Path file = Path.of(args[1]);
        ServerSocketChannel server = ServerSocketChannel.open();
        server.bind(new InetSocketAddress("127.0.0.1", 0));
        Thread drain = new Thread(() -> {
            try (SocketChannel peer = server.accept()) {
                ByteBuffer buf = ByteBuffer.allocateDirect(1 << 16);
                while (peer.read(buf) >= 0) {
                    buf.clear();
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        drain.start();
        long sent = 0;
        try (SocketChannel sock = SocketChannel.open(server.getLocalAddress())) {
            if (args[0].equals("transfer")) {
                try (FileChannel in = FileChannel.open(file, StandardOpenOption.READ)) {
                    long size = in.size();
                    while (sent < size) {
                        sent += in.transferTo(sent, size - sent, sock);
                    }
                }
            } else {
                ByteBuffer heap = ByteBuffer.wrap(Files.readAllBytes(file));
                while (heap.hasRemaining()) {
                    sent += sock.write(heap);
                }
            }
        }
        drain.join();
        System.out.println(sent);
    }
}
