/*
 * P11KeyStoreCheck - Java's own PKCS#11 provider (SunPKCS11) on hsmd's module,
 * as a Java application would use it: the token as a KeyStore, each private
 * key entry with its certificate, and signatures made with the entry's key
 * and checked with the certificate's public key by Java's own providers; the
 * secret keys as secret key entries, HMAC keys MACing through the token.
 *
 *   java P11KeyStoreCheck.java CONFIG PIN MESSAGE
 *
 * Prints one line per entry ("entry ALIAS key=... cert=... chain=N subject=...",
 * N the certificates of its chain, which Java finds on the token), then
 * one per key entry signed ("signed ALIAS ALG verified=true|false"), and for
 * secret keys their algorithm ("secret ALIAS ALG") and, but for AES keys, an
 * HMAC-SHA256 of the message made with them ("mac ALIAS HEX"), for the test
 * to check.
 */
import java.nio.charset.StandardCharsets;
import java.security.Key;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.X509Certificate;
import java.util.Collections;
import java.util.HexFormat;
import javax.crypto.Mac;

public class P11KeyStoreCheck {
	public static void main(String[] args) throws Exception {
		Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
		KeyStore ks = KeyStore.getInstance("PKCS11", p);
		ks.load(null, args[1].toCharArray());
		byte[] msg = args[2].getBytes(StandardCharsets.UTF_8);
		for (String alias : Collections.list(ks.aliases())) {
			X509Certificate cert = (X509Certificate) ks.getCertificate(alias);
			java.security.cert.Certificate[] chain = ks.getCertificateChain(alias);
			System.out.println("entry " + alias + " key=" + ks.isKeyEntry(alias) + " cert="
			                   + (cert != null) + " chain=" + (chain != null ? chain.length : 0)
			                   + " subject="
			                   + (cert != null ? cert.getSubjectX500Principal().getName() : "-"));
			if (ks.isKeyEntry(alias) && cert == null) { /* a secret key: HMAC keys MAC */
				Key secret = ks.getKey(alias, null);
				System.out.println("secret " + alias + " " + secret.getAlgorithm());
				if (!secret.getAlgorithm().equals("AES")) {
					Mac mac = Mac.getInstance("HmacSHA256", p);
					mac.init(secret);
					System.out.println("mac " + alias + " "
					                   + HexFormat.of().formatHex(mac.doFinal(msg)));
				}
				continue;
			}
			if (!ks.isKeyEntry(alias) || cert == null)
				continue;
			PrivateKey key = (PrivateKey) ks.getKey(alias, null);
			String alg = key.getAlgorithm().equals("RSA") ? "SHA256withRSA" : "SHA256withECDSA";
			Signature s = Signature.getInstance(alg, p);
			s.initSign(key);
			s.update(msg);
			byte[] sig = s.sign();
			Signature v = Signature.getInstance(alg); /* Java's own, not the token's */
			v.initVerify(cert.getPublicKey());
			v.update(msg);
			System.out.println("signed " + alias + " " + alg + " verified=" + v.verify(sig));
		}
	}
}
